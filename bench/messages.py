"""CPU per message on the frame path, for the three ways of defining the
messages issue 18 weighed, in one run:

- hand: the hand checks main had before ridesync/messages.py (frames.py and
  contract.open_envelope read from git at BEFORE: the baseline);
- msgspec: the code as it is (ridesync/messages.py's Structs);
- pydantic: v2 models of the same messages, written here;
- spliced (notification only): msgspec reading the envelope with its data
  left unparsed (msgspec.Raw), spliced into the frame as it came: what the
  gateway could do if every publisher wrote compact JSON (not done).

Three paths: a driver's frame read and checked (driver.cmd.location,
driver.cmd.trip_accept), and a notification's body from RabbitMQ made into
the frame a socket is written (trip.event.created, bench.fanout's sample
Trip, its envelope written compact, as orjson writes it, so that splicing
it gives the same bytes); every variant must give the same frame bytes.
Rounds alternate the variants; the figure is the median round's CPU time
per message.

    .venv/bin/python -m bench.messages [--messages 20000] [--rounds 7]"""
import argparse
import json
import statistics
import subprocess
import time
import types
from pathlib import Path
from typing import Annotated, Literal, Union

import msgspec
import orjson
import pydantic
import pydantic_core

from bench.fanout import sample_trip
from bench.support import load, machine
from ridesync import contract
from ridesync.gateway import frames

BEFORE = "6453264"  # main just before the messages were typed
ROOT = Path(__file__).resolve().parent.parent


def before(path):
    """The module at path as it was at BEFORE."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE}:{path}"], check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType(path)
    exec(compile(source, path, "exec"), module.__dict__)
    return module


# --- pydantic v2: the same messages --------------------------------------------------------

Id = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")]


class Location(pydantic.BaseModel):
    latitude: Annotated[float, pydantic.Field(ge=-90, le=90, strict=False)]
    longitude: Annotated[float, pydantic.Field(ge=-180, le=180)]


class DriverMoved(pydantic.BaseModel):
    location: Location
    geohash: Annotated[str, pydantic.StringConstraints(max_length=12)] = ""


class DriverAnswer(pydantic.BaseModel):
    trip_id: Id = pydantic.Field(alias="tripID")
    rider_id: Id = pydantic.Field(alias="riderID")
    driver: dict


class MovedFrame(pydantic.BaseModel):
    type: Literal[contract.DRIVER_LOCATION]
    data: DriverMoved


class AnswerFrame(pydantic.BaseModel):
    type: Literal[contract.DRIVER_TRIP_ACCEPT]
    data: DriverAnswer


class Envelope(pydantic.BaseModel):
    owner_id: str = pydantic.Field(alias="ownerId")
    data: dict


FRAME = pydantic.TypeAdapter(Annotated[Union[MovedFrame, AnswerFrame], pydantic.Field(discriminator="type")])
ENVELOPE = pydantic.TypeAdapter(Envelope)


# --- the variants ---------------------------------------------------------------------------

def hand_variants():
    old_frames, old_contract = before("ridesync/gateway/frames.py"), before("ridesync/contract.py")
    return (lambda raw: old_frames.read_frame(raw, old_frames.DRIVER_FRAME_TYPES),
            lambda kind, body: orjson.dumps({"type": kind, "data": old_contract.open_envelope(body)[1]}))


def msgspec_variants():
    return (lambda raw: frames.read_frame(raw, frames.DRIVER_FRAME_TYPES),
            lambda kind, body: orjson.dumps({"type": kind, "data": contract.open_envelope(body)[1]}))


def pydantic_variants():
    return (lambda raw: FRAME.validate_json(raw),
            lambda kind, body: pydantic_core.to_json({"type": kind, "data": ENVELOPE.validate_json(body).data}))


class RawEnvelope(msgspec.Struct):
    owner_id: str = msgspec.field(name="ownerId")
    data: msgspec.Raw


RAW_ENVELOPE = msgspec.json.Decoder(RawEnvelope)


def spliced_variants():
    return (None,
            lambda kind, body: b'{"type":' + orjson.dumps(kind) + b',"data":' + RAW_ENVELOPE.decode(body).data + b"}")


VARIANTS = {"hand": hand_variants, "msgspec": msgspec_variants, "pydantic": pydantic_variants,
            "spliced": spliced_variants}


def cpu_us(call, args, n):
    started = time.process_time()
    for _ in range(n):
        call(*args)
    return (time.process_time() - started) / n * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    paths = {
        "frame in: driver.cmd.location": (0, (json.dumps({"type": contract.DRIVER_LOCATION, "data": {
            "location": {"latitude": 37.7749, "longitude": -122.4194}, "geohash": "9q8yy"}}),)),
        "frame in: driver.cmd.trip_accept": (0, (json.dumps({"type": contract.DRIVER_TRIP_ACCEPT, "data": {
            "tripID": "trip-0123456789abcdef", "riderID": "rider-42",
            "driver": {"id": "d1", "name": "Ann", "carPlate": "7ABC123", "packageSlug": "sedan"}}}),)),
        "notification out: trip.event.created": (1, (contract.TRIP_CREATED,
                                                     orjson.dumps({"ownerId": "r1", "data": sample_trip("r1")}))),
    }
    variants = {name: make() for name, make in VARIANTS.items()}
    taking = {path: [name for name in variants if variants[name][which]] for path, (which, _) in paths.items()}
    for path, (which, call_args) in paths.items():
        if which:  # every variant writes the same frame
            assert len({variants[name][which](*call_args) for name in taking[path]}) == 1, path
    rounds = {(path, name): [] for path in paths for name in taking[path]}
    for _ in range(args.rounds):
        for path, (which, call_args) in paths.items():
            for name in taking[path]:
                rounds[path, name].append(cpu_us(variants[name][which], call_args, args.messages))
    print(f"{machine()}; load {load()}; {args.messages} messages x {args.rounds} rounds, median round, CPU:")
    for path in paths:
        baseline = statistics.median(rounds[path, "hand"])
        print(f"  {path}")
        for name in taking[path]:
            figure = statistics.median(rounds[path, name])
            print(f"    {name:9s} {figure:6.2f} us per message ({figure / baseline:.2f}x hand)")


if __name__ == "__main__":
    main()
