// The driver's page: online with a package, a request with its route and
// fare, accept or decline, each step of the ride, and driving along the route.
import { drive } from "./drive.js";
import { routePoints } from "./map.js";
import { showError } from "./session.js";
import { ENDED, money, statusInWords, WITHDRAWN } from "./words.js";

const $ = (id) => document.getElementById(id);
const STEPS = { arrived: "driver.cmd.trip_arrived", started: "driver.cmd.trip_started", completed: "driver.cmd.trip_completed" };
// Which steps each status allows (the lifecycle: README, "The ride").
const NEXT = { accepted: ["arrived", "driver-cancel"], arrived: ["started", "driver-cancel"], in_progress: ["completed"] };

export class DriverView {
  constructor(session, map) {
    Object.assign(this, { session, map, driver: null, offer: null, trip: null, position: null, stopDriving: null });
    $("driver").hidden = false;
    $("accept").onclick = () => this.answer("driver.cmd.trip_accept");
    $("decline").onclick = () => this.answer("driver.cmd.trip_decline");
    for (const [button, type] of Object.entries(STEPS)) $(button).onclick = () => this.step(type, {});
    $("driver-cancel").onclick = () => this.step("driver.cmd.trip_cancel", { reason: $("driver-reason").value });
    $("drive-button").onclick = () => this.toggleDriving();
    this.render();
  }

  receive(type, data) {
    if (type === "driver.cmd.register") {
      this.driver = data;
      $("driver-card").textContent = `${data.name}, car ${data.carPlate}, ${data.packageSlug}.`;
      this.moveTo({ point: data.location, heading: null });
    } else if (type === "trip.state" || type === "driver.cmd.trip_request") {
      const offered = data && data.status === "pending";
      Object.assign(this, { offer: offered ? data : null, trip: offered ? null : data });
    } else if (type === "driver.cmd.trip_withdrawn") {
      if (this.offer && this.offer.id === data.tripID) this.offer = null;
      this.render(`The request was withdrawn: ${WITHDRAWN[data.reason] || data.reason}.`);
      return;
    } else if (type.startsWith("trip.event.")) {
      Object.assign(this, { offer: null, trip: data });
    } else {
      return;
    }
    this.render();
  }

  answer(type) {
    const offer = this.offer;
    if (!this.session.send(type, { tripID: offer.id, riderID: offer.userID, driver: this.driver })) return;
    $("accept").disabled = $("decline").disabled = true;
    if (type === "driver.cmd.trip_decline") {
      this.offer = null;
      this.render("You declined the ride.");
    }
  }

  step(type, data) {
    this.session.send(type, { tripID: this.trip.id, ...data });
  }

  moveTo(where) {
    this.position = where.point;
    this.map.car(where.point, where.heading);
  }

  // Accepted: straight to the pickup; in progress: along the route.
  path() {
    const trip = this.trip;
    const points = routePoints(trip && trip.route);
    if (!trip || !points.length || ENDED.has(trip.status)) return null;
    return trip.status === "accepted" && this.position ? [this.position, points[0]] : points;
  }

  toggleDriving() {
    if (this.stopDriving) return this.stoppedDriving();
    const path = this.path();
    if (!path) {
      showError("There is no route to drive: accept a ride first.");
      return;
    }
    const report = (where) => {
      this.moveTo(where);
      this.session.send("driver.cmd.location", { location: where.point });
    };
    this.stopDriving = drive(path, Number($("speed").value) || 50, report, () => this.stoppedDriving());
    $("drive-button").textContent = "Stop driving";
  }

  stoppedDriving() {
    if (this.stopDriving) this.stopDriving();
    this.stopDriving = null;
    $("drive-button").textContent = "Drive along the route";
  }

  render(words) {
    const shown = this.offer || this.trip;
    const status = $("status");
    status.textContent = words || statusInWords("driver", shown);
    status.dataset.status = shown ? shown.status : "none";
    this.map.trip(shown);
    $("request").hidden = !this.offer;
    if (this.offer) {
      const fare = this.offer.selectedFare;
      const km = (this.offer.route.distance / 1000).toFixed(1);
      $("request-text").textContent = `Rider ${this.offer.userID} asks for a ${fare.packageSlug} ride of ${km} km, ` +
        `fare ${money(fare.totalPriceInCents)}.`;
      $("accept").disabled = $("decline").disabled = false;
    }
    const allowed = (this.trip && NEXT[this.trip.status]) || [];
    $("steps").hidden = !allowed.length;
    for (const id of ["arrived", "started", "completed", "driver-cancel"]) $(id).hidden = !allowed.includes(id);
    $("driver-reason").hidden = !allowed.includes("driver-cancel");
    if (this.trip && ENDED.has(this.trip.status)) this.stoppedDriving();
  }
}
