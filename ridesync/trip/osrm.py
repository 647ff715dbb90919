"""The OSRM HTTP client. Every call is bounded in wall-clock time, and is
abandoned at once (its socket shut) when the caller goes away."""
import json
import logging
import socket
import threading

import requests
import urllib3
from requests.adapters import HTTPAdapter

from ridesync import metrics
from ridesync.settings import process_settings
from ridesync.trip.routing import CallerGone, NoRoute, RouteUnavailable, parse_osrm_route

log = logging.getLogger(__name__)

USER_AGENT = "RideSync/1.0 (ride-hailing trip service)"


class OsrmClient:
    def __init__(self, base_url, timeout):
        self._base_url = base_url
        self._timeout = timeout

    @metrics.osrm_call
    def fetch_route(self, pickup, destination, time_left=None, on_caller_gone=None):
        """The road route, or RouteUnavailable / NoRoute.

        time_left: seconds the caller can still wait (its gRPC deadline);
        on_caller_gone: registers a callback to run if the caller leaves."""
        budget = self._timeout if time_left is None else min(self._timeout, time_left)
        if budget <= 0:
            raise CallerGone("the caller's deadline leaves no time to ask OSRM")
        url = (
            f"{self._base_url}/route/v1/driving/"
            f"{pickup.longitude},{pickup.latitude};{destination.longitude},{destination.latitude}"
        )
        call = _AbandonableCall()
        if on_caller_gone is not None and not on_caller_gone(lambda: call.abandon("the caller went away", CallerGone)):
            raise CallerGone("the caller went away before OSRM was asked")
        timer = threading.Timer(budget, call.abandon, args=(f"no answer within {budget:.1f}s",))
        timer.start()
        try:
            status, body = call.get(url, params={"overview": "full", "geometries": "geojson"}, timeout=budget)
        finally:
            timer.cancel()
        return _route_from(status, body)


def _route_from(status, body):
    try:
        payload = json.loads(body)
    except ValueError:
        raise RouteUnavailable(f"OSRM answered HTTP {status} with a body that is not JSON") from None
    if status == 400 and isinstance(payload, dict) and isinstance(payload.get("code"), str):
        raise NoRoute(f"OSRM found no route: {payload['code']}: {payload.get('message', '')}")
    if status != 200:
        raise RouteUnavailable(f"OSRM answered HTTP {status}")
    return parse_osrm_route(payload)


class _AbandonableCall:
    """One HTTP GET that another thread may abandon by shutting its sockets."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sockets = []
        self._abandoned = None  # (exception class, message) once abandoned

    def get(self, url, params, timeout):
        _current.call = self
        try:
            with requests.Session() as session:
                session.mount("http://", _TrackingAdapter())
                session.mount("https://", _TrackingAdapter())
                with session.get(
                    url, params=params, timeout=(timeout, timeout), stream=True,
                    headers={"User-Agent": USER_AGENT},
                ) as response:
                    return response.status_code, _read_capped(response)
        except (requests.RequestException, OSError) as exc:
            if self._abandoned:
                error, reason = self._abandoned
                raise error(reason) from exc
            raise RouteUnavailable(f"OSRM unreachable: {exc.__class__.__name__}: {exc}") from exc
        finally:
            _current.call = None

    def attach(self, sock):
        with self._lock:
            self._sockets.append(sock)
            if self._abandoned:
                _shut(sock)

    def abandon(self, reason, error=RouteUnavailable):
        with self._lock:
            if self._abandoned:
                return
            self._abandoned = (error, f"OSRM call abandoned: {reason}")
            for sock in self._sockets:
                _shut(sock)


def _read_capped(response):
    body = bytearray()
    for chunk in response.iter_content(64 * 1024):
        body += chunk
        if len(body) > process_settings().osrm_max_body:
            raise RouteUnavailable("OSRM answer is larger than we accept")
    return bytes(body)


def _shut(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


_current = threading.local()


class _TracksSockets:
    def _new_conn(self):
        sock = super()._new_conn()
        call = getattr(_current, "call", None)
        if call is not None:
            call.attach(sock)
        return sock


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = type("Connection", (_TracksSockets, urllib3.connection.HTTPConnection), {})


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = type("Connection", (_TracksSockets, urllib3.connection.HTTPSConnection), {})


class _TrackingAdapter(HTTPAdapter):
    """Hands every new socket of this call to the call, so it can be shut."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
