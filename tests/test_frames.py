"""What a phone may send (ridesync/gateway/frames.py): plain checks, no I/O."""
import json

import pytest

from ridesync import contract
from ridesync.messages import as_json
from ridesync.gateway.frames import DRIVER_FRAME_TYPES, BadFrame, read_frame


def frame(kind, **data):
    return json.dumps({"type": kind, "data": data})


@pytest.mark.parametrize("raw, says", [
    ("[" * 10_000 + "]" * 10_000, "nested too deeply"),
    (frame(contract.DRIVER_TRIP_ARRIVED, tripID="\ud800"), "data.tripID may hold only"),
    (frame(contract.DRIVER_TRIP_ARRIVED, tripID="t\r\nINFO forged"), "data.tripID may hold only"),
    (frame(contract.DRIVER_TRIP_ARRIVED, tripID={"$ne": ""}), "data.tripID is required"),
    (frame(contract.DRIVER_TRIP_ACCEPT, tripID="t1", riderID="r" * 129, driver={}), "data.riderID must be at most"),
    (frame(contract.DRIVER_TRIP_CANCEL, tripID="t1", reason="\udfff"), "data.reason must be text"),
    (frame(contract.DRIVER_TRIP_CANCEL, tripID="t1", reason="x" * 501), "data.reason must be text"),
    (frame(contract.DRIVER_TRIP_CANCEL, tripID="t1", reason=7), "data.reason must be text"),
])
def test_a_frame_no_service_could_take_is_a_bad_frame(raw, says):
    with pytest.raises(BadFrame, match=says):
        read_frame(raw, DRIVER_FRAME_TYPES)


def test_a_well_formed_step_and_answer_pass():
    assert read_frame(frame(contract.DRIVER_TRIP_CANCEL, tripID="t-1", reason="flat tyre, sorry"),
                      DRIVER_FRAME_TYPES)[0] == contract.DRIVER_TRIP_CANCEL
    kind, data = read_frame(frame(contract.DRIVER_TRIP_ACCEPT, tripID="t-1", riderID="r:1@x", driver={}),
                            DRIVER_FRAME_TYPES)
    assert (kind, data.rider_id) == (contract.DRIVER_TRIP_ACCEPT, "r:1@x")


def test_a_step_keeps_only_what_a_step_takes():
    _kind, data = read_frame(frame(contract.DRIVER_TRIP_STARTED, tripID="t-1", reason={"x": 1}, extra="e" * 999),
                             DRIVER_FRAME_TYPES)
    assert as_json(data) == {"tripID": "t-1"}


def test_an_answer_and_a_location_keep_only_what_they_take():
    _kind, answer = read_frame(frame(contract.DRIVER_TRIP_ACCEPT, tripID="t-1", riderID="r1", driver={"id": "d1"},
                                     extra="e" * 999), DRIVER_FRAME_TYPES)
    assert as_json(answer) == {"tripID": "t-1", "riderID": "r1", "driver": {"id": "d1"}}
    _kind, moved = read_frame(frame(contract.DRIVER_LOCATION, location={"latitude": 1, "longitude": 2, "x": [0]},
                                    extra={"y": 1}), DRIVER_FRAME_TYPES)
    assert as_json(moved) == {"location": {"latitude": 1.0, "longitude": 2.0}, "geohash": ""}


def test_an_unknown_type_is_quoted_back_in_part():
    with pytest.raises(BadFrame) as refused:
        read_frame(json.dumps({"type": "x" * 60_000, "data": {}}), DRIVER_FRAME_TYPES)
    assert refused.value.message.startswith("unknown frame type 'xxx") and len(refused.value.message) < 500
