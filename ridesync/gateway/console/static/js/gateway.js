// Talking to the gateway: HTTP (coordinates as named: the v2 dialect) and a
// v2 socket, as the user signed in (a token, or in open mode a user id).
export const SUBPROTOCOL = "ridesync.v2";

export class GatewayError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

export function call(identity, method, path, body) {
  const headers = { "X-RideSync-Dialect": "v2" };
  let url = path;
  if (identity.token) {
    headers.Authorization = `Bearer ${identity.token}`;
  } else if (body) {
    body = { userID: identity.userID, ...body };
  } else {
    url += `${path.includes("?") ? "&" : "?"}userID=${encodeURIComponent(identity.userID)}`;
  }
  if (body) headers["Content-Type"] = "application/json";
  return fetch(url, { method, headers, body: body && JSON.stringify(body) }).then(answered, (failure) => {
    throw new GatewayError("unreachable", `the gateway could not be reached (${failure.message})`, 0);
  });
}

async function answered(response) {
  const answer = await response.json().catch(() => null);
  if (response.ok && answer) return answer.data;
  const error = answer && answer.error;
  if (error) throw new GatewayError(error.code, error.message, response.status);
  throw new GatewayError("http", `the gateway answered ${response.status} ${response.statusText}`, response.status);
}

// The rider's or driver's socket URL: ?token= when there is one (a browser
// cannot set headers on a WebSocket), ?userID= in open mode.
export function socketURL(identity, role, packageSlug) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams();
  if (identity.token) query.set("token", identity.token);
  else query.set("userID", identity.userID);
  if (role === "driver") query.set("packageSlug", packageSlug);
  return `${scheme}//${location.host}/ws/${role}s?${query}`;
}

// Why a socket closed, in words; and whether to open another.
const CLOSED = {
  1000: ["the socket was closed", false],
  1001: ["the gateway is restarting; reconnecting", true],
  1008: ["the gateway refused this socket", false],
  1009: ["a frame was too large; reconnecting", true],
  1011: ["the gateway failed on this socket; reconnecting", true],
  4000: ["this user connected somewhere else (another tab?); reload this page to take the connection back", false],
};

export function closedInWords(event, everOpen) {
  if (!everOpen) {
    return ["the gateway refused the socket or cannot be reached (a wrong token or id, " +
            "DriverService down, or the gateway stopped); retrying", true];
  }
  const [words, again] = CLOSED[event.code] || [`the connection was lost (${event.code}); reconnecting`, true];
  return [event.reason ? `${words}: ${event.reason}` : words, again];
}
