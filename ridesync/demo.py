"""A rider and a driver through a whole ride, against a running gateway in
open mode (`make run`), or in token mode with AUTH_SECRET set here as
there (the demo mints its phones' tokens), printing each step:

    python -m ridesync.demo [--url http://localhost:8081] [--package sedan]

Both phones speak the v2 dialect (Sec-WebSocket-Protocol: ridesync.v2). The
driver must be the one dispatch asks: on `make run` with no other driver of
the package online, it is. The driver's phone drives the car from where
it registered to the pickup, then along the trip's route, and the rider's
phone prints where it sees the car and how far it is."""
import argparse
import json
import sys
import uuid

import requests
import websocket

from ridesync import messages, tokens
from ridesync.settings import process_settings

TIMEOUT = 15.0  # seconds for any one answer or frame
LEG_STEPS = 4  # fixes the car sends on the way to the pickup, and on the way to the destination
SEEN_WITHIN = 3.0  # seconds the rider waits to see the car move before its driver sends the fix again
PICKUP = {"latitude": 37.7749, "longitude": -122.4194}
DESTINATION = {"latitude": 37.7897, "longitude": -122.3972}


class DemoFailed(Exception):
    pass


def credentials(user_id, role):
    """The Authorization header of user_id when AUTH_SECRET is set; none in open mode."""
    secret = process_settings().auth_secret
    return {"Authorization": f"Bearer {tokens.mint(secret, user_id, role)}"} if secret else {}


class Phone:
    def __init__(self, who, url, headers):
        self.who = who
        self.early = []  # frames received before they were expected
        self.ws = websocket.create_connection(url, timeout=TIMEOUT, subprotocols=["ridesync.v2"], header=headers)

    def send(self, kind, data):
        print(f"{self.who:>6} -> {kind} {summary(data)}")
        self.ws.send(json.dumps({"type": kind, "data": data}))

    def expect(self, kind, timeout=TIMEOUT):
        """The data of the next frame of this type. Frames of other types are
        kept for later: two services' events may cross (a payment session
        before the driver assigned)."""
        for frame in self.early:
            if frame["type"] == kind:
                self.early.remove(frame)
                return frame["data"]
        self.ws.settimeout(timeout)
        while True:
            try:
                frame = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                raise DemoFailed(f"{self.who}: no {kind} within {timeout:.0f}s") from None
            print(f"{self.who:>6} <- {frame['type']} {summary(frame['data'])}")
            if frame["type"] == "error":
                raise DemoFailed(f"{self.who} was refused: {frame['data']['message']}")
            if frame["type"] == kind:
                return frame["data"]
            self.early.append(frame)

    def close(self):
        self.ws.close()


def summary(data):
    """What a person wants to see of a frame's data."""
    if not isinstance(data, dict):
        return json.dumps(data)
    if "etaSeconds" in data:
        where, heading = data["location"], data["heading"]
        return (f"the car at {where['latitude']:.5f},{where['longitude']:.5f}"
                + (f" heading {heading:.0f}°" if heading is not None else "")
                + f": {data['distanceMeters'] / 1000:.1f} km, {data['etaSeconds'] / 60:.0f} min away"
                + (" (estimated)" if data.get("estimated") else ""))
    if "location" in data:
        return f"at {data['location']['latitude']:.5f},{data['location']['longitude']:.5f}"
    if "status" in data:
        driver = data.get("driver", {}).get("name")
        return f"trip {data['id'][:8]}: {data['status']}" + (f", driver {driver}" if driver else "")
    if "carPlate" in data:
        return f"{data['id']}: {data['name']}, {data['carPlate']}"
    if messages.TRIP_ID in data:
        rest = {k: v for k, v in data.items() if k not in (messages.TRIP_ID, "riderID", "driver")}
        return f"trip {data[messages.TRIP_ID][:8]}" + (f" {json.dumps(rest)}" if rest else "")
    return json.dumps(data)


def http(method, url, headers, **body):
    answer = requests.request(method, url, data=json.dumps(body) if body else None, timeout=TIMEOUT,
                              headers={**headers, "X-RideSync-Dialect": "v2"})  # route points as named
    if answer.status_code >= 400:
        raise DemoFailed(f"{method} {url}: {answer.status_code} {answer.text}")
    return answer.json()["data"]


def ride(base, package):
    ws_base = base.replace("http", "ws", 1)
    rider_id, driver_id = f"demo-rider-{uuid.uuid4().hex[:6]}", f"demo-driver-{uuid.uuid4().hex[:6]}"
    as_rider = credentials(rider_id, "rider")
    driver = Phone("driver", f"{ws_base}/ws/drivers?userID={driver_id}&packageSlug={package}",
                   credentials(driver_id, "driver"))
    rider = Phone("rider", f"{ws_base}/ws/riders?userID={rider_id}", as_rider)
    try:
        registered = driver.expect("driver.cmd.register")
        driver.expect("trip.state")
        rider.expect("trip.state")

        preview = http("POST", f"{base}/trip/preview", as_rider, userID=rider_id, pickup=PICKUP, destination=DESTINATION)
        fare = next(f for f in preview["rideFares"] if f["packageSlug"] == package)
        print(f" rider previews: {preview['route']['distance'] / 1000:.1f} km, {package} "
              f"${fare['totalPriceInCents'] / 100:.2f}")
        trip = http("POST", f"{base}/trip/start", as_rider, userID=rider_id, rideFareID=fare["id"])["trip"]
        print(f" rider starts trip {trip['id']}")
        rider.expect("trip.event.created")

        request = driver.expect("driver.cmd.trip_request")
        driver.send("driver.cmd.trip_accept", messages.as_json(
            messages.TripAnswer(trip_id=request["id"], rider_id=rider_id, driver=registered)))
        driver.expect("trip.event.driver_assigned")
        rider.expect("trip.event.driver_assigned")
        rider.expect("payment.event.session_created")
        route = trip["route"]["geometry"][0]["coordinates"]
        for step, event, leg in (("arrived", "trip.event.driver_arrived", line(registered["location"], route[0])),
                                 ("started", "trip.event.started", ()),
                                 ("completed", "trip.event.completed", along(route))):
            for where in leg:
                drive(driver, rider, where)
            driver.send(f"driver.cmd.trip_{step}", messages.as_json(messages.AboutTrip(trip_id=trip["id"])))
            driver.expect(event)
            rider.expect(event)
        record = http("GET", f"{base}/trip/{trip['id']}?userID={rider_id}", as_rider)
        payment = record.get("payment", {})
        print(f" rider reads GET /trip/{trip['id']}: {record['status']}, payment session "
              f"{payment.get('sessionID', 'not recorded yet')}")
    finally:
        rider.close()
        driver.close()


def drive(driver, rider, where):
    """The car at where; sent again until the rider sees it move (the first
    fix may reach DriverService before it has heard the trip was taken)."""
    for _ in range(3):
        driver.send("driver.cmd.location", {"location": where})
        try:
            return rider.expect("trip.event.driver_location", SEEN_WITHIN)
        except DemoFailed:
            continue
    raise DemoFailed(f"the rider never saw the car at {where}")


def line(start, end):
    """LEG_STEPS points from start to end, in a straight line, end last."""
    return [{"latitude": start["latitude"] + (end["latitude"] - start["latitude"]) * i / LEG_STEPS,
             "longitude": start["longitude"] + (end["longitude"] - start["longitude"]) * i / LEG_STEPS}
            for i in range(1, LEG_STEPS + 1)]


def along(path):
    """Up to LEG_STEPS points of a route's path after its start, evenly picked, its end last."""
    return [path[i] for i in sorted({round(step * (len(path) - 1) / LEG_STEPS) for step in range(1, LEG_STEPS + 1)})
            if i > 0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://localhost:8081", help="the gateway")
    parser.add_argument("--package", default="sedan", choices=("suv", "sedan", "van", "luxury"))
    args = parser.parse_args(argv)
    try:
        ride(args.url.rstrip("/"), args.package)
    except (DemoFailed, OSError, websocket.WebSocketException, requests.RequestException) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    print("done: a whole ride, from preview to completed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
