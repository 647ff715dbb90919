"""What a socket of each dialect is written, when, and in what shape; and
the coordinate order of an HTTP answer. Plain logic: the socket's writer
is handed in.

v2 (the `ridesync.v2` subprotocol) is written every notification as it
comes, `trip.state` first: arrival order, the phone sorts out the rest.

v1 is the original web client (the `web/` of the Go project this gateway
replaces), whose two pages are small state machines:

- The rider page takes a frame's type for its status, except the types it
  has no case for (completed, cancelled: ignored). It reaches its payment
  step only when `payment.event.session_created` comes last: a
  `trip.event.driver_assigned` after it puts the page back on "Driver
  assigned!" for good. The two are published by different services, and a
  socket may open after its user's driver_assigned went to the one before;
  so a payment session whose trip's driver_assigned this socket has not
  written is preceded by one made from the trip read then (the accept is
  committed before the payment is asked for), and a later copy is dropped.
  When the trip cannot be read, the session is held until its
  driver_assigned comes, and a held one travels with the socket's unwritten
  notifications to the user's next socket. A session of a trip that is no
  longer the rider's current one is dropped: the page's ride is over.
- The driver page takes any frame it knows for its status too, so a frame
  after its accept hides the "All set!" card. The original sent a driver
  only `driver.cmd.register` and `driver.cmd.trip_request`; so does this.
  An offer withdrawn, or the trip it shows cancelled or completed, becomes
  `driver.cmd.trip_request` with `data: null`: the page takes
  `data?.trip ?? data` as its trip, null, and shows "Waiting for a rider...",
  the state its own decline leaves it in. Nothing is written when the page
  shows another trip than the one that ended.
- A socket whose worker was killed (SIGKILL, OOM) took with it what it had
  been handed and not written, and what came for the user until their next
  socket: that socket is handed LOST_HANDOVER in its place (hub.tick), and
  the page is brought to the user's current trip, read then, as the frames
  it understands, less what this socket already wrote of it: a rider's
  `trip.event.created` (pending), or its `driver_assigned` then its payment
  session (the one held, or the one in the trip record); a driver's trip as
  `driver.cmd.trip_request`, `data: null` when no trip is current. A v2
  socket's `trip.state`, read after its marker, already says it all.
- The original wrote route points with latitude and longitude exchanged
  (OSRM's [lon, lat] read as [lat, lon]) and both pages exchange them back;
  v1 frames, and HTTP answers unless asked for v2, carry them that way.
  Every other coordinate (a driver's location) the original wrote as named.
"""
import logging
from collections import OrderedDict, namedtuple

from ridesync import contract
from ridesync.gateway.frames import TRIP_STATE, V1_TYPES
from ridesync.messages import TRIP_ID

log = logging.getLogger(__name__)

HTTP_HEADER = "X-RideSync-Dialect"
RECENT_TRIPS = 32  # trips a v1 rider socket remembers the stage of
# notice: the one it answers (its headers; held, it is carried); message_id: none for a frame made up here
Write = namedtuple("Write", "kind data notice message_id")
UNREAD = object()  # what read_trip() gives when the trip could not be read
ASSIGNED, PAID, ENDED = "assigned", "paid", "ended"
EARLIER_STAGES = (contract.TRIP_CREATED, contract.TRIP_NO_DRIVERS_FOUND)  # of a trip before its driver
OFFER_ENDS = (contract.DRIVER_TRIP_WITHDRAWN, contract.TRIP_CANCELLED, contract.TRIP_COMPLETED)
LOST_HANDOVER = "gateway.lost"  # carried by a forfeit `left`: what the dead worker's socket had is lost


def http_as_named(header_value):
    """Whether an HTTP caller asked for coordinates as named (v2)."""
    return (header_value or "").strip().lower() == "v2"


def original_order(value):
    """A Trip, {"trip": Trip} or an HTTP answer (JSON) with its route's points
    as the original wrote them: latitude and longitude exchanged. A new
    object; value is left alone."""
    if not isinstance(value, dict):
        return value
    changed = dict(value)
    if isinstance(value.get("route"), dict):
        changed["route"] = _route(value["route"])
    if isinstance(value.get("trip"), dict):
        changed["trip"] = original_order(value["trip"])
    return changed


def _route(route):
    geometry = [{"coordinates": [{"latitude": point.get("longitude"), "longitude": point.get("latitude")}
                                 for point in part.get("coordinates", ())]}
                for part in route.get("geometry", ())]
    return {**route, "geometry": geometry}


def for_socket(role, v2):
    if v2:
        return Dialect()
    return V1Rider() if role == "rider" else V1Driver()


class Dialect:
    """v2: everything, in arrival order."""

    def __init__(self):
        self.held = []  # notices taken and not written yet, oldest first (carried to the next socket)

    def opening(self, driver, trip):
        """The (type, data) frames a socket is written first."""
        return ([(contract.DRIVER_REGISTER, driver)] if driver is not None else []) + [(TRIP_STATE, trip)]

    def plan(self, kind, data, notice, read_trip):
        return [] if kind == LOST_HANDOVER else [_as_is(kind, data, notice)]

    def written(self, write):
        """write went out."""

    def deliver(self, kind, data, notice, send, read_trip):
        """Writes what notice (of this kind, data its payload) calls for with
        send(write) -> False once the socket is gone; False then.
        read_trip() -> the user's current trip (JSON), None, or UNREAD."""
        writes = self.plan(kind, data, notice, read_trip)
        if not writes and notice not in self.held:
            log.debug("%s not written to a v1 socket", kind)
        for write in writes:
            if not send(write):
                return False
            self.written(write)
        return True


class V1Rider(Dialect):
    def __init__(self):
        super().__init__()
        self._trips = OrderedDict()  # trip id -> ASSIGNED, PAID or ENDED, for the most recent trips

    def opening(self, driver, trip):
        return []

    def plan(self, kind, data, notice, read_trip):
        if kind == contract.PAYMENT_SESSION_CREATED:
            return self._payment(data, notice, read_trip)
        if kind == LOST_HANDOVER:
            return _caught_up(read_trip, notice, self._current)
        trip_id = data.get("id")
        if trip_id in self._trips and kind in (contract.TRIP_DRIVER_ASSIGNED, *EARLIER_STAGES):
            return []  # written already (made from the trip read), or the trip is past it or over
        if kind == contract.TRIP_DRIVER_ASSIGNED:
            return [_as_is(kind, original_order(data), notice)] + self._held_for(trip_id)
        if kind in (contract.TRIP_CANCELLED, contract.TRIP_COMPLETED):
            self._stage(trip_id, ENDED)
            self.held[:] = [held for held in self.held if _payment_trip(held) != trip_id]
        return [_as_is(kind, original_order(data), notice)] if kind in V1_TYPES else []

    def _payment(self, data, notice, read_trip):
        trip_id = data.get(TRIP_ID)
        stage = self._trips.get(trip_id)
        if stage == ASSIGNED:
            return [_as_is(contract.PAYMENT_SESSION_CREATED, data, notice)]
        if stage is not None or notice in self.held:
            return []  # written already, or the trip is over, or held
        trip = read_trip()
        if trip is UNREAD:
            self.held.append(notice)  # until its trip's driver_assigned is written
            return []
        if trip is None or trip.get("id") != trip_id or not trip.get("driver"):
            self._stage(trip_id, ENDED)
            return []
        return [Write(contract.TRIP_DRIVER_ASSIGNED, original_order(trip), notice, None),
                _as_is(contract.PAYMENT_SESSION_CREATED, data, notice)]

    def _current(self, trip, notice):
        """The writes that bring the page from what this socket wrote of trip to trip."""
        if trip is None or trip["id"] in self._trips:
            return []  # no ride for the page to show (it ignores an end), or shown already
        if not trip.get("driver"):
            return [Write(contract.TRIP_CREATED, original_order(trip), notice, None)]
        paid = self._held_for(trip["id"]) or (
            [Write(contract.PAYMENT_SESSION_CREATED, {TRIP_ID: trip["id"], **trip["payment"]}, notice, None)]
            if trip.get("payment") else [])
        return [Write(contract.TRIP_DRIVER_ASSIGNED, original_order(trip), notice, None)] + paid

    def _held_for(self, trip_id):
        return [_as_is(contract.PAYMENT_SESSION_CREATED, _payload(held), held)
                for held in self.held if _payment_trip(held) == trip_id]

    def written(self, write):
        if write.kind == contract.TRIP_DRIVER_ASSIGNED:
            self._stage(write.data["id"], ASSIGNED)
        elif write.kind == contract.PAYMENT_SESSION_CREATED:
            self._stage(write.data[TRIP_ID], PAID)
            if write.notice in self.held:
                self.held.remove(write.notice)

    def _stage(self, trip_id, stage):
        self._trips[trip_id] = stage
        self._trips.move_to_end(trip_id)
        while len(self._trips) > RECENT_TRIPS:
            self._trips.popitem(last=False)


class V1Driver(Dialect):
    def __init__(self):
        super().__init__()
        self._shown = None  # the trip whose request the page shows, offered or accepted

    def opening(self, driver, trip):
        return [(contract.DRIVER_REGISTER, driver)]

    def plan(self, kind, data, notice, read_trip):
        if kind == LOST_HANDOVER:
            return _caught_up(read_trip, notice, self._current)
        if kind == contract.DRIVER_TRIP_REQUEST:
            return [_as_is(kind, original_order(data), notice)]
        if kind in OFFER_ENDS and self._shown in (None, data.get(TRIP_ID, data.get("id"))):
            return [Write(contract.DRIVER_TRIP_REQUEST, None, notice, None)]
        return []

    def _current(self, trip, notice):
        """The trip the driver has now as its request, or none (null) when it has none; nothing when shown already."""
        if trip is not None and trip["id"] == self._shown:
            return []
        return [Write(contract.DRIVER_TRIP_REQUEST, original_order(trip) if trip else None, notice, None)]

    def written(self, write):
        self._shown = write.data["id"] if write.data is not None else None


def _caught_up(read_trip, notice, current):
    """current(trip, notice) for the user's current trip, read now; nothing when it cannot be read."""
    trip = read_trip()
    if trip is UNREAD:
        log.warning("a socket whose worker died is not brought to its trip: the trip service did not answer")
        return []
    return current(trip, notice)


def _as_is(kind, data, notice):
    return Write(kind, data, notice, notice.message_id)


def _payload(notice):
    return contract.open_envelope(notice.body)[1]


def _payment_trip(notice):
    return _payload(notice).get(TRIP_ID)
