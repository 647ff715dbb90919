"""A phone for tests: a real WebSocket client over a real socket."""
import json
import time
from urllib.parse import parse_qs, urlsplit

import websocket

from tests.support import bearer

ROLES = {"/ws/riders": "rider", "/ws/drivers": "driver"}
# A driver's upgrade is answered after RegisterDriver, the `connected`
# marker (MARKER_WAIT, then it opens anyway), CurrentTrip and TripLocation:
# up to 5 + 5 + 5 + 1 s by the gateway's own deadlines, which a phone waits out.
UPGRADE_WAIT = 20.0


class Phone:
    """v2 asks for the ridesync.v2 dialect; without it the phone is a v1 client.
    headers: the upgrade's headers; by default the Authorization of the
    path's userID in the path's role (open mode ignores it)."""

    def __init__(self, base_url, path, v2=False, headers=None):
        self.url = base_url.replace("http://", "ws://") + path
        self.ws = websocket.create_connection(self.url, timeout=UPGRADE_WAIT,
                                              subprotocols=["ridesync.v2"] if v2 else None,
                                              header=_authorization(path) if headers is None else headers,
                                              suppress_origin=True)  # an app, not a page in a browser
        self.frames = []
        self.seen = []  # the type of every frame received, in order

    def next(self, kind=None, timeout=10.0):
        """The next frame (of this type, if given; others are kept in .frames)."""
        frame = self.poll(kind, timeout)
        if frame is None:
            raise AssertionError(f"no {kind or 'frame'} within {timeout}s; got {[f['type'] for f in self.frames]}")
        return frame

    def poll(self, kind=None, timeout=0.05):
        """The next frame (of this type) arriving within timeout, else None."""
        for i, frame in enumerate(self.frames):
            if kind is None or frame["type"] == kind:
                return self.frames.pop(i)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self.ws.settimeout(remaining)
            try:
                frame = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                return None
            self.seen.append(frame["type"])
            if kind is None or frame["type"] == kind:
                return frame
            self.frames.append(frame)
        return None

    def send(self, kind, data):
        self.ws.send(json.dumps({"type": kind, "data": data}))

    def send_raw(self, text):
        self.ws.send(text)

    def closed_with(self, timeout=10.0):
        """(code, reason) of the server's close frame."""
        self.ws.settimeout(timeout)
        while True:
            opcode, data = self.ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return int.from_bytes(data[:2], "big"), data[2:].decode()

    def frames_until_closed(self, timeout=10.0):
        """Every frame the server sends until its close frame: (frames, close code)."""
        frames = self.frames
        self.frames = []
        self.ws.settimeout(timeout)
        while True:
            opcode, data = self.ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return frames, int.from_bytes(data[:2], "big")
            if opcode == websocket.ABNF.OPCODE_TEXT:
                frames.append(json.loads(data))

    def closed_or_reset(self, timeout=10.0):
        """True once the socket ends, with a close frame or without (its server killed)."""
        self.ws.settimeout(timeout)
        try:
            while True:
                opcode, _data = self.ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    return True
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            return True

    def close(self):
        try:
            self.ws.close(timeout=2)
        except (websocket.WebSocketException, OSError):
            pass


def _authorization(path):
    parts = urlsplit(path)
    user_ids = parse_qs(parts.query).get("userID")
    if not user_ids or parts.path not in ROLES:
        return {}
    return bearer(user_ids[0], ROLES[parts.path])
