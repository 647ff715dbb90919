// The rider's page: pickup and destination on the map, fares, start, the
// ride as it happens, cancel, and the driver's car coming.
import { ENDED, etaInWords, money, paymentInWords, place, statusInWords } from "./words.js";

const $ = (id) => document.getElementById(id);
const CANCELLABLE = new Set(["pending", "accepted", "arrived"]);

export class RiderView {
  constructor(session, map) {
    Object.assign(this, { session, map, trip: null, pickup: null, destination: null });
    $("rider").hidden = false;
    map.onClick((point) => this.choose(point));
    $("preview").onclick = () => this.preview();
    $("cancel").onclick = () => this.cancel();
    this.show(null);
  }

  active() {
    return this.trip && !ENDED.has(this.trip.status);
  }

  receive(type, data) {
    if (type === "trip.state" || type.startsWith("trip.event.") && type !== "trip.event.driver_location") {
      this.show(data);
    } else if (type === "trip.event.driver_location") {
      this.driverAt(data);
    } else if (type === "payment.event.session_created") {
      $("payment").textContent = paymentInWords(data);
    }
  }

  choose(point) {
    if (this.active()) return;
    if (!this.pickup || this.destination) {
      Object.assign(this, { pickup: point, destination: null });
      $("fares").replaceChildren();
      this.map.route(null);
    } else {
      this.destination = point;
    }
    $("pickup").textContent = this.pickup ? place(this.pickup) : "not set";
    $("destination").textContent = this.destination ? place(this.destination) : "not set";
    this.map.place("Pickup", this.pickup, "#2da44e");
    this.map.place("Destination", this.destination, "#cf222e");
    $("preview").disabled = !this.destination;
  }

  async preview() {
    const answer = await this.session.call("POST", "/trip/preview", { pickup: this.pickup, destination: this.destination });
    if (!answer) return;
    this.map.route(answer.route);
    const km = (answer.route.distance / 1000).toFixed(1);
    $("fares").replaceChildren(...answer.rideFares.map((fare) => {
      const item = document.createElement("li");
      item.dataset.package = fare.packageSlug;
      item.textContent = `${fare.packageSlug}: ${money(fare.totalPriceInCents)} (${km} km) `;
      const start = document.createElement("button");
      start.textContent = `Ride ${fare.packageSlug}`;
      start.onclick = () => this.start(fare);
      item.append(start);
      return item;
    }));
  }

  async start(fare) {
    const answer = await this.session.call("POST", "/trip/start", { rideFareID: fare.id });
    if (answer) this.show(answer.trip);
  }

  async cancel() {
    const answer = await this.session.call("POST", "/trip/cancel", { tripID: this.trip.id, reason: $("rider-reason").value });
    if (answer) this.show(answer);
  }

  driverAt(fix) {
    if (!this.trip || fix.tripID !== this.trip.id || ENDED.has(this.trip.status)) return;
    this.map.car(fix.location, fix.heading);
    $("eta").textContent = etaInWords(fix, this.trip.status);
  }

  show(trip) {
    const moved = !this.trip || !trip || this.trip.status !== trip.status;
    this.trip = trip;
    const status = $("status");
    status.textContent = statusInWords("rider", trip);
    status.dataset.status = trip ? trip.status : "none";
    const active = this.active();
    $("rider-cancel").hidden = !(trip && CANCELLABLE.has(trip.status));
    $("choose").hidden = active;
    // The session may be announced before the Trip that names it: a Trip without one leaves it shown.
    if (trip && trip.payment) $("payment").textContent = paymentInWords(trip.payment);
    else if (!trip || trip.status === "pending") $("payment").textContent = "";
    if (trip) {
      this.map.trip(trip);
      $("fares").replaceChildren();
      Object.assign(this, { pickup: null, destination: null });
      $("pickup").textContent = $("destination").textContent = "not set";
      $("preview").disabled = true;
    }
    if (!active) {
      this.map.car(null);
      $("eta").textContent = "";
    } else if (trip.driverLocation) {
      this.driverAt(trip.driverLocation);  // trip.state and reads carry the last one sent
    } else if (moved) {
      $("eta").textContent = "";  // its target changed (pickup, then destination): wait for the next fix
    }
  }
}
