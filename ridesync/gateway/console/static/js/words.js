// What each state of a ride means to the person looking at it.
export function money(cents, currency = "USD") {
  return new Intl.NumberFormat("en-US", { style: "currency", currency }).format(cents / 100);
}

export function paymentInWords(payment) {
  return `Payment session ${payment.sessionID}: ${money(payment.amount, payment.currency)}.`;
}

export function place(point) {
  return `${point.latitude.toFixed(5)}, ${point.longitude.toFixed(5)}`;
}

function driverWords(driver) {
  return driver ? `${driver.name}, car ${driver.carPlate}` : "your driver";
}

const RIDER = {
  pending: () => "Searching for a driver…",
  accepted: (trip) => `Driver assigned: ${driverWords(trip.driver)}. On the way to you.`,
  arrived: (trip) => `Your driver has arrived: ${driverWords(trip.driver)}.`,
  in_progress: () => "Ride in progress.",
  completed: (trip) => `Ride completed. ${fare(trip)}`,
  no_drivers_found: () => "No driver is available. Try again.",
};

const DRIVER = {
  pending: () => "A ride is offered to you.",
  accepted: () => "On the way to the pickup.",
  arrived: () => "At the pickup, waiting for the rider.",
  in_progress: () => "Ride in progress.",
  completed: (trip) => `Ride completed. ${fare(trip)}`,
  no_drivers_found: () => "The ride found no driver.",
};

function fare(trip) {
  const selected = trip.selectedFare;
  return selected ? `Fare ${money(selected.totalPriceInCents)}.` : "";
}

export function statusInWords(role, trip) {
  if (!trip) return role === "rider" ? "No ride yet." : "Online, waiting for a ride request.";
  if (trip.status === "cancelled") {
    const reason = trip.reason ? `: ${trip.reason}` : ".";
    return `Ride cancelled by the ${trip.cancelledBy || "rider"}${reason}`;
  }
  const words = (role === "rider" ? RIDER : DRIVER)[trip.status];
  return words ? words(trip) : `The ride is ${trip.status}.`;
}

export const WITHDRAWN = {
  taken: "another driver took it",
  cancelled: "the rider cancelled it",
  expired: "it was left unanswered too long",
};

// The driver's distance and ETA: to the pickup until they arrive, then to the destination.
export function etaInWords(fix, status) {
  if (status === "arrived") return "";
  const minutes = Math.max(1, Math.round(fix.etaSeconds / 60));
  const km = (fix.distanceMeters / 1000).toFixed(1);
  const about = fix.estimated ? "about " : "";
  return status === "in_progress"
    ? `${about}${minutes} min to the destination (${km} km).`
    : `Driver ${about}${minutes} min away (${km} km).`;
}

export const ENDED = new Set(["completed", "cancelled", "no_drivers_found"]);
