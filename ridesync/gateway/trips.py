"""POST /trip/preview, POST /trip/start, POST /trip/cancel, GET
/trip/current and GET /trip/<tripID>. Route points in every answer are in
the original client's order unless the caller sends `X-RideSync-Dialect: v2`
(dialects.py)."""
import math

from flask import Blueprint, current_app, jsonify, request

from ridesync import messages
from ridesync.gateway import body, dialects
from ridesync.gateway.errors import ApiError
from ridesync.gateway.identity import acting_user, checked
from ridesync.gateway.locations import with_driver_location
from ridesync.gateway.rider_gone import cancel_if_rider_leaves
from ridesync.gateway.upstream import CALL_DEADLINE
from ridesync.pb import trip_pb2

bp = Blueprint("trips", __name__)
PREVIEW_MARGIN = 2.0  # seconds beyond OSRM_TIMEOUT for the trip service to answer


@bp.post("/trip/preview")
def preview():
    asked = body.read(messages.FarePreview)
    user_id = acting_user(asked.user_id, "rider")
    _within_rate(user_id)
    pickup, destination = asked.pickup, asked.destination
    call = _upstream().trips.PreviewTrip.future(
        trip_pb2.PreviewTripRequest(
            userID=user_id,
            startLocation=trip_pb2.Coordinate(latitude=pickup.latitude, longitude=pickup.longitude),
            endLocation=trip_pb2.Coordinate(latitude=destination.latitude, longitude=destination.longitude),
        ),
        timeout=current_app.config["RIDESYNC"].osrm_timeout + PREVIEW_MARGIN,
    )
    with cancel_if_rider_leaves(call, request.environ):
        return _created(call.result())


@bp.post("/trip/start")
def start():
    asked = body.read(messages.TripStart)
    user_id = acting_user(asked.user_id, "rider")
    _within_rate(user_id)
    response = _upstream().trips.CreateTrip(
        trip_pb2.CreateTripRequest(rideFareID=asked.ride_fare_id, userID=user_id),
        timeout=CALL_DEADLINE,
    )
    return _created(response)


@bp.post("/trip/cancel")
def cancel():
    """The rider cancels their trip (until the ride starts)."""
    asked = body.read(messages.RiderCancellation)
    response = _upstream().trips.CancelTrip(
        trip_pb2.CancelTripRequest(tripID=asked.trip_id, userID=acting_user(asked.user_id, "rider"),
                                   reason=asked.reason),
        timeout=CALL_DEADLINE,
    )
    return _answer(messages.proto_json(response.trip))


@bp.get("/trip/current")
def current():
    """The trip the caller rides or drives now: what a phone reads to learn
    what it missed."""
    user_id = acting_user(request.args.get("userID"), None)
    response = _upstream().trips.CurrentTrip(trip_pb2.CurrentTripRequest(userID=user_id), timeout=CALL_DEADLINE)
    if not response.HasField("trip"):
        raise ApiError(404, "not_found", f"{user_id} has no active trip")
    return _answer(with_driver_location(messages.proto_json(response.trip), _upstream()))


@bp.get("/trip/<trip_id>")
def read(trip_id):
    """A trip, to its rider or its driver."""
    response = _upstream().trips.GetTrip(
        trip_pb2.GetTripRequest(tripID=checked(trip_id, messages.TRIP_ID),
                                userID=acting_user(request.args.get("userID"), None)),
        timeout=CALL_DEADLINE,
    )
    return _answer(with_driver_location(messages.proto_json(response.trip), _upstream()))


def _within_rate(user_id):
    wait = current_app.extensions["ridesync.previews"].take(user_id)
    if wait:
        raise ApiError(429, "too_many_requests", f"too many previews and starts; try again in {wait:.1f} s",
                       {"Retry-After": str(math.ceil(wait))})


def _upstream():
    return current_app.extensions["ridesync.upstream"]


def _created(message):
    return _answer(messages.proto_json(message), 201)


def _answer(data, status=200):
    if not dialects.http_as_named(request.headers.get(dialects.HTTP_HEADER)):
        data = dialects.original_order(data)
    response = jsonify(data=data)
    response.status_code = status
    response.vary.add(dialects.HTTP_HEADER)
    return response
