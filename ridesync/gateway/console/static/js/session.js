// One signed-in user's socket and calls: the socket opened again when it
// drops (trip.state tells the page where the ride is), errors shown in words.
import { call, closedInWords, socketURL, SUBPROTOCOL } from "./gateway.js";

const $ = (id) => document.getElementById(id);
const MAX_LOG = 60;

export function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}

export function clearError() {
  $("error").hidden = true;
}

export function log(words) {
  const item = document.createElement("li");
  item.textContent = `${new Date().toLocaleTimeString()} ${words}`;
  $("log").prepend(item);
  while ($("log").children.length > MAX_LOG) $("log").lastChild.remove();
}

export class Session {
  constructor(identity, role, packageSlug) {
    Object.assign(this, { identity, role, packageSlug, retryIn: 1000, stopped: false });
  }

  name() {
    return this.identity.userID || "the token's user";
  }

  open(view) {
    this.view = view;
    const socket = new WebSocket(socketURL(this.identity, this.role, this.packageSlug), SUBPROTOCOL);
    let everOpen = false;
    this.socket = socket;
    socket.onopen = () => {
      everOpen = true;
      this.retryIn = 1000;
      $("connection").textContent = `Connected as ${this.role} ${this.name()}.`;
    };
    socket.onmessage = (message) => this._receive(message.data);
    socket.onclose = (event) => {
      if (this.stopped || socket !== this.socket) return;
      const [words, again] = closedInWords(event, everOpen);
      $("connection").textContent = `Disconnected: ${words}.`;
      log(`disconnected: ${words}`);
      if (!everOpen || !again) showError(`Disconnected: ${words}.`);
      if (again) {
        setTimeout(() => this.stopped || this.open(view), this.retryIn);
        this.retryIn = Math.min(this.retryIn * 2, 10000);
      }
    };
  }

  close() {
    this.stopped = true;
    if (this.socket) this.socket.close(1000);
  }

  send(type, data) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) {
      showError("Not connected to the gateway; wait for the connection to come back and try again.");
      return false;
    }
    this.socket.send(JSON.stringify({ type, data }));
    return true;
  }

  // An HTTP call; a refusal is shown in words and answers null.
  async call(method, path, body) {
    try {
      const data = await call(this.identity, method, path, body);
      clearError();
      return data;
    } catch (error) {
      showError(`The gateway refused: ${error.message} (${error.code}).`);
      return null;
    }
  }

  _receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (error) {
      showError(`The gateway sent a frame that is not JSON: ${error.message}`);
      return;
    }
    const status = frame.data && frame.data.status;
    if (frame.type !== "trip.event.driver_location") log(`${frame.type}${status ? ` (${status})` : ""}`);  // one a second
    if (frame.type === "error") {
      showError(`The gateway refused that: ${frame.data.message} (${frame.data.code}).`);
      return;
    }
    try {
      this.view.receive(frame.type, frame.data);
    } catch (error) {
      showError(`This page could not show ${frame.type}: ${error.message}`);
    }
  }
}
