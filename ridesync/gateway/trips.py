"""POST /trip/preview and POST /trip/start."""
from flask import Blueprint, current_app, jsonify, request
from google.protobuf import json_format

from ridesync.gateway import body
from ridesync.gateway.rider_gone import cancel_if_rider_leaves
from ridesync.gateway.upstream import CALL_DEADLINE
from ridesync.pb import trip_pb2

bp = Blueprint("trips", __name__)
PREVIEW_MARGIN = 2.0  # seconds beyond OSRM_TIMEOUT for the trip service to answer


@bp.post("/trip/preview")
def preview():
    data = body.json_object()
    user_id = body.identifier(data, "userID")
    pickup = body.coordinate(data, "pickup")
    destination = body.coordinate(data, "destination")
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
    data = body.json_object()
    response = _upstream().trips.CreateTrip(
        trip_pb2.CreateTripRequest(
            rideFareID=body.identifier(data, "rideFareID"),
            userID=body.identifier(data, "userID"),
        ),
        timeout=CALL_DEADLINE,
    )
    return _created(response)


def _upstream():
    return current_app.extensions["ridesync.upstream"]


def _created(message):
    return jsonify(data=to_json(message)), 201


def to_json(message):
    """A protobuf message as JSON with the .proto field names."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
