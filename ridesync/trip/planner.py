"""Choosing the route: OSRM when it is switched on and healthy, otherwise the
great-circle estimate. A circuit breaker stops asking OSRM after repeated
failures and tries it again after a pause."""
import logging
import threading

from circuitbreaker import CircuitBreaker

from ridesync import metrics
from ridesync.trip.osrm import OsrmClient
from ridesync.trip.routing import CallerGone, NoRoute, RouteUnavailable, estimate_route

log = logging.getLogger(__name__)


class RoutePlanner:
    def __init__(self, fetch_route, enabled=True, failure_threshold=5, recovery_timeout=30):
        """fetch_route(pickup, destination, **call) -> Route is the OSRM call."""
        self._fetch_route = fetch_route
        self._enabled = enabled
        # circuitbreaker holds no lock across the call: previews reach OSRM concurrently.
        self._breaker = _OsrmBreaker(
            failure_threshold=failure_threshold,
            recovery_timeout=recovery_timeout,
            expected_exception=RouteUnavailable,
            name="osrm",
        )
        self._state_lock = threading.Lock()
        self._reported_state = self._breaker.state
        metrics.breaker_state(self._reported_state)
        if not enabled:
            log.warning("OSRM is switched off (OSRM_ENABLED=false): every route is an estimate")

    @classmethod
    def from_settings(cls, settings):
        """OSRM at OSRM_URL with its timeout and breaker, as the settings say."""
        return cls(
            OsrmClient(settings.osrm_url, settings.osrm_timeout).fetch_route,
            enabled=settings.osrm_enabled,
            failure_threshold=settings.osrm_breaker_failures,
            recovery_timeout=settings.osrm_breaker_reset,
        )

    @property
    def breaker_state(self):
        return self._breaker.state

    def route(self, pickup, destination, **call):
        if not self._enabled:
            return estimate_route(pickup, destination)
        if self._breaker.opened:
            return estimate_route(pickup, destination)
        self._report_state()  # open -> half_open shows here
        try:
            with self._breaker:
                return self._fetch_route(pickup, destination, **call)
        except CallerGone as exc:
            log.info("route from (%s) to (%s) is estimated: %s", _fmt(pickup), _fmt(destination), exc)
            return estimate_route(pickup, destination)
        except (RouteUnavailable, NoRoute) as exc:
            log.warning("route from (%s) to (%s) is estimated: %s", _fmt(pickup), _fmt(destination), exc)
            return estimate_route(pickup, destination)
        finally:
            self._report_state()

    def _report_state(self):
        with self._state_lock:
            state = self._breaker.state
            if state == self._reported_state:
                return
            previous, self._reported_state = self._reported_state, state
        metrics.breaker_state(state)
        log.warning(
            "OSRM circuit breaker %s -> %s (%d consecutive failures; last: %s)",
            previous, state, self._breaker.failure_count, self._breaker.last_failure,
        )


class _OsrmBreaker(CircuitBreaker):
    def __exit__(self, exc_type, exc_value, traceback):
        if exc_type is not None and issubclass(exc_type, CallerGone):
            return False  # neither a failure nor a success of OSRM: the breaker stays as it is
        return super().__exit__(exc_type, exc_value, traceback)


def _fmt(c):
    return f"{c.latitude},{c.longitude}"
