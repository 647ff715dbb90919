"""Every setting of every process, read from the environment in one place."""
import os
from dataclasses import dataclass


def _bool(value):
    return value.strip().lower() in ("1", "true", "yes", "on")


def _list(value):
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _choice(name, value, choices):
    value = value.strip().lower()
    if value not in choices:
        raise ValueError(f"{name} is {value!r}: one of {', '.join(choices)}")
    return value


def _port(value):
    return int(value) if value else None


def _listen_addr(target):
    """Where a service listens when *_LISTEN_ADDR is unset: its
    *_SERVICE_ADDR when that is a plain host:port; None when it is a target
    naming replicas (dns:///..., ipv4:a:p,b:p)."""
    if target.startswith(("dns:", "ipv4:", "ipv6:", "unix:")) or "," in target or "/" in target:
        return None
    return target


@dataclass(frozen=True)
class Settings:
    port: int
    amqp_url: str
    trip_service_addr: str
    driver_service_addr: str
    osrm_url: str
    osrm_enabled: bool
    osrm_timeout: float
    osrm_breaker_failures: int
    osrm_breaker_reset: float
    cors_origins: tuple
    fare_ttl: float
    reconnect_window: float
    ws_ping_interval: float
    trip_metrics_port: int | None  # None: the service serves no metrics
    driver_metrics_port: int | None
    payment_metrics_port: int | None
    payment_local_latency: float
    offer_timeout: float
    outbox_hold: float  # seconds the trip relay leaves a CreateTrip's event to the replica publishing it at once
    database_url: str
    redis_url: str | None  # None: the driver pool lives in the DriverService process
    redis_key_prefix: str
    trip_listen_addr: str | None  # None: TRIP_SERVICE_ADDR names replicas, and no TRIP_LISTEN_ADDR was given
    driver_listen_addr: str | None
    auth_mode: str  # "token" (the default) or "open"
    auth_secret: str | None
    auth_jwks_url: str | None
    auth_audience: str | None
    preview_rate: float  # previews and starts a second, per user and gateway worker
    preview_burst: int
    body_timeout: float
    max_trip_km: float
    metrics_allow: tuple  # networks (CIDRs) allowed to read /metrics and /live/stats
    work_queue_type: str  # "classic" or "quorum": the services' work queues (ridesync/rabbit.py)

    @classmethod
    def from_env(cls, env=None):
        env = os.environ if env is None else env
        trip_service_addr = env.get("TRIP_SERVICE_ADDR", "localhost:9093")
        driver_service_addr = env.get("DRIVER_SERVICE_ADDR", "localhost:9092")
        return cls(
            port=int(env.get("PORT", "8081")),
            amqp_url=env.get("AMQP_URL", "amqp://guest:guest@localhost:5672/"),
            trip_service_addr=trip_service_addr,
            driver_service_addr=driver_service_addr,
            osrm_url=env.get("OSRM_URL", "https://router.project-osrm.org").rstrip("/"),
            osrm_enabled=_bool(env.get("OSRM_ENABLED", "true")),
            osrm_timeout=float(env.get("OSRM_TIMEOUT", "10")),
            osrm_breaker_failures=int(env.get("OSRM_BREAKER_FAILURES", "5")),
            osrm_breaker_reset=float(env.get("OSRM_BREAKER_RESET", "30")),
            cors_origins=_list(env.get("CORS_ORIGINS", "*")),
            fare_ttl=float(env.get("FARE_TTL", "900")),
            reconnect_window=float(env.get("RECONNECT_WINDOW", "30")),
            ws_ping_interval=float(env.get("WS_PING_INTERVAL", "25")),
            trip_metrics_port=_port(env.get("TRIP_METRICS_PORT")),
            driver_metrics_port=_port(env.get("DRIVER_METRICS_PORT")),
            payment_metrics_port=_port(env.get("PAYMENT_METRICS_PORT")),
            payment_local_latency=float(env.get("PAYMENT_LOCAL_LATENCY", "0")),
            offer_timeout=float(env.get("OFFER_TIMEOUT", "30")),
            outbox_hold=float(env.get("OUTBOX_HOLD", "30")),  # outbox.HOLD
            database_url=env.get("DATABASE_URL", "sqlite:///var/ridesync.db"),
            redis_url=env.get("REDIS_URL") or None,
            redis_key_prefix=env.get("REDIS_KEY_PREFIX", "ridesync:"),
            trip_listen_addr=env.get("TRIP_LISTEN_ADDR") or _listen_addr(trip_service_addr),
            driver_listen_addr=env.get("DRIVER_LISTEN_ADDR") or _listen_addr(driver_service_addr),
            auth_mode=env.get("AUTH_MODE", "token").strip().lower(),
            auth_secret=env.get("AUTH_SECRET") or None,
            auth_jwks_url=env.get("AUTH_JWKS_URL") or None,
            auth_audience=env.get("AUTH_AUDIENCE") or None,
            preview_rate=float(env.get("PREVIEW_RATE", "10")),
            preview_burst=int(env.get("PREVIEW_BURST", "20")),
            body_timeout=float(env.get("BODY_TIMEOUT", "10")),
            max_trip_km=float(env.get("MAX_TRIP_KM", "300")),
            metrics_allow=_list(env.get("METRICS_ALLOW", "127.0.0.0/8,::1/128")),
            work_queue_type=_choice("WORK_QUEUE_TYPE", env.get("WORK_QUEUE_TYPE", "classic"), ("classic", "quorum")),
        )
