"""What an open socket holds on its gateway worker: one greenlet, its
handler's, which also reads the socket (simple-websocket's reader thread is
never started: bench/RESULTS.md, "memory per rider"). Real gunicorn, one
worker. Pings and a phone that stops answering them: tests/test_live.py;
a frame too big: tests/test_limits.py."""
import requests

from tests.ride import ride  # noqa: F401 (a fixture)
from tests.support import wait_until

RIDERS = 10


def test_an_open_socket_holds_one_greenlet_which_reads_each_frame_the_phone_sends(ride):
    url = ride.another_gateway(workers=1)
    stats = lambda: requests.get(f"{url}/live/stats?greenlets=1", timeout=5).json()  # noqa: E731
    ride.rider(url=url, v2=True).close()  # its broker connection, gRPC channel and their greenlets from here on
    idle = wait_until(lambda: (s := stats())["inboxes"] == 0 and s, message="an idle worker")

    riders = [ride.rider(url=url, v2=True) for _ in range(RIDERS)]
    wait_until(lambda: stats()["greenlets"] == idle["greenlets"] + RIDERS, message="one greenlet a socket")
    for rider in riders:
        for _ in range(3):
            rider.send_raw("not json")
            assert rider.next("error")["data"]["code"] == "invalid_json"

    for rider in riders:
        rider.close()
    wait_until(lambda: (s := stats())["inboxes"] == 0 and s["greenlets"] <= idle["greenlets"],
               message="every socket and its greenlet to be gone")
