"""The original web client's two pages (the `web/` of Hoyci/uber-microservices,
which this gateway replaces), as state machines a test can drive over real
sockets and HTTP. Written down from reading its source, not copied:

Rider page (RiderMap, useRiderStreamConnection, RiderTripOverview):
- opens `/ws/riders?userID=<uuid>` with no subprotocol and no token, and
  sends `driver.cmd.location` `{location}` with its own fixed position;
- a frame whose type is not one of its TripEvents replaces the page with an
  error; of the others it acts on five: `driver.cmd.location` (the drivers
  on the map), `payment.event.session_created` (keeps the session, status),
  `trip.event.driver_assigned` (keeps data.driver, status),
  `trip.event.created` and `trip.event.no_drivers_found` (status); the rest
  (completed, cancelled) change nothing;
- a map click POSTs /trip/preview (JSON as text/plain) and draws the route
  as [coord.longitude, coord.latitude] points; a fare click POSTs
  /trip/start and reads `tripID` from the top of the answer;
- its panel: no preview: "Start a trip"; status payment_session_created
  with a session: "Payment Required" with the assigned driver's card;
  no_drivers_found: "No drivers found"; driver_assigned: "Driver
  assigned!"; created: "Looking for a driver"; a preview without a trip id:
  the fares; else "No trip ride fares".

Driver page (DriverMap, useDriverStreamConnection, DriverTripOverview):
- opens `/ws/drivers?userID=<uuid>&packageSlug=<slug>` and sends
  `driver.cmd.location` `{location, geohash}`;
- an unknown type replaces the page with an error; every known type
  becomes its status; `driver.cmd.trip_request` sets its trip to
  `data?.trip ?? data`, `driver.cmd.register` its driver;
- accept sends `driver.cmd.trip_accept` `{tripID: trip.id, riderID:
  trip.userID, driver}` and sets the status to trip_accept; decline sends
  `driver.cmd.trip_decline` likewise and then clears status and trip;
- the start and destination markers are the route's first and last points
  as [longitude, latitude];
- its panel: no trip: "Waiting for a rider..."; status trip_request: "Trip
  request received!" (accept, decline); status trip_accept: "All set!";
  anything else: nothing.
"""
import json
import threading
import uuid

import requests

from tests.phone import Phone

KNOWN_TYPES = frozenset({  # the pages' TripEvents
    "trip.event.no_drivers_found", "trip.event.driver_assigned", "trip.event.completed", "trip.event.cancelled",
    "trip.event.created", "driver.cmd.location", "driver.cmd.trip_request", "driver.cmd.trip_accept",
    "driver.cmd.trip_decline", "driver.cmd.register", "payment.event.session_created",
})
HOME = {"latitude": 37.7749, "longitude": -122.4194}  # where both pages start
HTTP_TIMEOUT = 15


class Page:
    """A page's socket, read by a thread of its own as the browser would:
    frames change the page's state as they come."""

    def __init__(self, base_url, path):
        self.error = None
        self.seen = []
        self.changed = threading.Condition()
        self._socket_url = (base_url, path)
        self.reconnect()

    def reconnect(self):
        """Its socket (opened again, once the last one ended), the page as it is."""
        self.phone = Phone(*self._socket_url, headers={})  # no subprotocol, no token: what a page sends
        self.phone.ws.settimeout(None)  # a page waits as long as it is open
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.opened()

    def ended(self, timeout=10.0):
        """True once its socket has ended (closed, or its server gone)."""
        self._reader.join(timeout)
        return not self._reader.is_alive()

    def _read(self):
        while True:
            try:
                raw = self.phone.ws.recv()
            except Exception:  # closed: the page stays as it is
                return
            if not raw:  # the close frame
                return
            frame = json.loads(raw)
            with self.changed:
                self.seen.append(frame["type"])
                if frame.get("type") not in KNOWN_TYPES:
                    self.error = f'Unknown message type "{frame.get("type")}"'
                else:
                    self.on_frame(frame["type"], frame.get("data"))
                self.changed.notify_all()

    def wait_for(self, condition, timeout=30.0):
        """Until condition() holds (checked on every frame), or AssertionError."""
        with self.changed:
            if not self.changed.wait_for(lambda: self.error is not None or condition(), timeout):
                raise AssertionError(f"{type(self).__name__} shows {self.panel()!r} after {self.seen}")
        assert self.error is None, self.error

    def send(self, kind, data):
        self.phone.send(kind, data)

    def close(self):
        self.phone.close()


class RiderPage(Page):
    def __init__(self, base_url):
        self.user_id = str(uuid.uuid4())
        self.base_url = base_url
        self.status = self.payment_session = self.assigned_driver = self.preview = None
        self.route = []  # the polyline, [lat, lng] points
        super().__init__(base_url, f"/ws/riders?userID={self.user_id}")

    def opened(self):
        self.send("driver.cmd.location", {"location": HOME})

    def on_frame(self, kind, data):
        if kind == "payment.event.session_created":
            self.payment_session, self.status = data, kind
        elif kind == "trip.event.driver_assigned":
            self.assigned_driver, self.status = data.get("driver"), kind
        elif kind in ("trip.event.created", "trip.event.no_drivers_found"):
            self.status = kind

    def click_map(self, destination):
        answer = _post(self.base_url, "/trip/preview", {"userID": self.user_id, "pickup": HOME,
                                                        "destination": destination})
        data = answer["data"]
        self.route = [[c["longitude"], c["latitude"]] for c in data["route"]["geometry"][0]["coordinates"]]
        with self.changed:
            self.preview = {"tripID": "", "rideFares": data["rideFares"]}
        return data["rideFares"]

    def choose(self, fare):
        """The fare clicked; the trip id the answer holds, for the test (the page reads `tripID` at its top)."""
        answer = _post(self.base_url, "/trip/start", {"rideFareID": fare["id"], "userID": self.user_id})
        with self.changed:
            self.preview["tripID"] = answer.get("tripID")
        return answer["data"]["tripID"]

    def panel(self):
        if self.preview is None:
            return "Start a trip"
        if self.status == "payment.event.session_created" and self.payment_session:
            return "Payment Required"
        return {"trip.event.no_drivers_found": "No drivers found", "trip.event.driver_assigned": "Driver assigned!",
                "trip.event.created": "Looking for a driver"}.get(self.status) or (
            "fares" if not self.preview["tripID"] else "No trip ride fares")


class DriverPage(Page):
    def __init__(self, base_url, package="sedan"):
        self.user_id = str(uuid.uuid4())
        self.status = self.trip = self.driver = None
        super().__init__(base_url, f"/ws/drivers?userID={self.user_id}&packageSlug={package}")

    def opened(self):
        self.send("driver.cmd.location", {"location": HOME, "geohash": "9q8yyk8"})

    def on_frame(self, kind, data):
        if kind == "driver.cmd.trip_request":
            self.trip = (data or {}).get("trip") or data
        elif kind == "driver.cmd.register":
            self.driver = data
        self.status = kind

    def answer(self, kind):
        """Accept or decline the trip shown, as its buttons do."""
        with self.changed:
            assert self.trip and self.trip.get("id") and self.driver, "no trip ID found or driver is not set"
            self.send(kind, {"tripID": self.trip["id"], "riderID": self.trip.get("userID"), "driver": self.driver})
            self.status = kind
            if kind == "driver.cmd.trip_decline":
                self.status = self.trip = None

    def markers(self):
        """The start and destination markers, [lat, lng]."""
        points = self.trip["route"]["geometry"][0]["coordinates"]
        return [[p["longitude"], p["latitude"]] for p in (points[0], points[-1])]

    def panel(self):
        if not self.trip:
            return "Waiting for a rider..."
        return {"driver.cmd.trip_request": "Trip request received!", "driver.cmd.trip_accept": "All set!"}.get(
            self.status)


def _post(base_url, path, payload):
    """As the page's fetch: JSON as text/plain, no token, no dialect header."""
    answer = requests.post(f"{base_url}{path}", data=json.dumps(payload), timeout=HTTP_TIMEOUT,
                           headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert answer.status_code == 201, answer.text
    return answer.json()
