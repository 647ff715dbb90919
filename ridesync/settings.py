"""Every setting of every process: its environment variable, default and
unit, read once per process (process_settings()), a bad value refused at start naming
its variable. README's configuration table is made from here
(`python -m ridesync.settings --readme`; tests/test_settings.py checks it).

To add one: a field below, `name: type = setting("ENV_NAME", default, KIND,
"what it sets")`, with the KIND that parses and checks it (add a Kind when
none fits); read it as `settings.process_settings().name` in a process, or take it
from the Settings a caller passes; then `python -m ridesync.settings --readme`."""
import functools
import ipaddress
import math
import os
import re
import sys
from dataclasses import dataclass, field, fields, replace


class BadSetting(ValueError):
    """One or more variables hold values their settings cannot take; the message names each."""


@dataclass(frozen=True)
class Kind:
    unit: str  # what a value is counted in, for the README's table ("" when nothing)
    parse: object  # str -> value, ValueError saying what the value should be


def _number(text, whole):
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        raise ValueError("not a whole number" if whole else "not a number") from None
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _at_least(least, whole=False):
    def parse(text):
        value = _number(text, whole)
        if value < least:
            raise ValueError(f"less than {least}")
        return value
    return parse


def _positive(text):
    value = _number(text, False)
    if value <= 0:
        raise ValueError("not above 0")
    return value


def _port(text):
    value = _number(text, True)
    if not 0 <= value <= 65535:
        raise ValueError("not a port (0 to 65535)")
    return value


_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _flag(text):
    try:
        return _FLAGS[text.strip().lower()]
    except KeyError:
        raise ValueError("not true or false") from None


def _names(text):
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _networks(text):
    names = _names(text)
    for name in names:
        try:
            ipaddress.ip_network(name, strict=False)
        except ValueError:
            raise ValueError(f"not a list of networks ({name} is none)") from None
    return names


def _url(text):
    if not re.match(r"^[a-z][a-z0-9+.-]*://", text.strip(), re.IGNORECASE):
        raise ValueError("not a URL (scheme://...)")
    return text.strip()


def _choice(*choices):
    def parse(text):
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"not one of {', '.join(choices)}")
        return value
    return Kind("one of " + ", ".join(choices), parse)


SECONDS = Kind("seconds", _at_least(0))
SOME_SECONDS = Kind("seconds", _positive)
WHOLE_SECONDS = Kind("seconds", _at_least(1, whole=True))
BYTES = Kind("bytes", _at_least(1, whole=True))
PER_SECOND = Kind("a second", _positive)
KM = Kind("km", _positive)
COUNT = Kind("", _at_least(1, whole=True))
PORT = Kind("port", _port)
FLAG = Kind("true or false", _flag)
TEXT = Kind("", str.strip)
URL = Kind("URL", _url)
NAMES = Kind("comma-separated", _names)
NETWORKS = Kind("comma-separated networks", _networks)
ADDRESS = Kind("gRPC target", str.strip)


def setting(env, default, kind, about):
    """A field read from the variable env; default None: unset (an empty value is unset too)."""
    return field(default=default, metadata={"env": env, "kind": kind, "about": about})


@dataclass(frozen=True)
class Settings:
    # Processes and where they meet
    port: int = setting("PORT", 8081, PORT, "where the gateway listens")
    web_concurrency: int = setting("WEB_CONCURRENCY", 2, COUNT, "gunicorn workers of the gateway")
    amqp_url: str = setting("AMQP_URL", "amqp://guest:guest@localhost:5672/", URL,
                            "the RabbitMQ broker, or its cluster's nodes separated by commas")
    work_queue_type: str = setting("WORK_QUEUE_TYPE", "classic", _choice("classic", "quorum"),
                                   "the type of the services' work queues and their dead-letter queue, and of each "
                                   "gateway worker's own queue")
    trip_service_addr: str = setting("TRIP_SERVICE_ADDR", "localhost:9093", ADDRESS,
                                     "the TripService: `host:port`, `dns:///name:port` (every address the name "
                                     "resolves to) or `ipv4:10.0.0.1:9093,10.0.0.2:9093`")
    driver_service_addr: str = setting("DRIVER_SERVICE_ADDR", "localhost:9092", ADDRESS,
                                       "the DriverService, as TRIP_SERVICE_ADDR")
    trip_listen_addr: str | None = setting("TRIP_LISTEN_ADDR", None, TEXT,
                                           "where the TripService listens; unset: TRIP_SERVICE_ADDR when that is a "
                                           "plain `host:port`")
    driver_listen_addr: str | None = setting("DRIVER_LISTEN_ADDR", None, TEXT,
                                             "where the DriverService listens; unset: as TRIP_LISTEN_ADDR")
    database_url: str = setting("DATABASE_URL", "sqlite:///var/ridesync.db", URL,
                                "the trip and payment state (see State)")
    redis_url: str | None = setting("REDIS_URL", None, URL,
                                    "the driver pool's Redis; unset: the pool lives in the `driver` process")
    redis_key_prefix: str = setting("REDIS_KEY_PREFIX", "ridesync:", TEXT, "before every key in Redis")
    # Routes and fares
    osrm_url: str = setting("OSRM_URL", "https://router.project-osrm.org", URL, "the OSRM server asked for routes")
    osrm_enabled: bool = setting("OSRM_ENABLED", True, FLAG, "false: straight-line estimates only")
    osrm_timeout: float = setting("OSRM_TIMEOUT", 10.0, SECONDS, "for one OSRM route")
    osrm_breaker_failures: int = setting("OSRM_BREAKER_FAILURES", 5, COUNT,
                                         "OSRM failures in a row that open the circuit breaker")
    osrm_breaker_reset: float = setting("OSRM_BREAKER_RESET", 30.0, SECONDS,
                                        "before an open breaker lets one call try OSRM again")
    fare_ttl: float = setting("FARE_TTL", 900.0, SECONDS, "how long a previewed fare may be started")
    fares_kept: int = setting("FARES_KEPT", 10_000, COUNT, "fares a TripService process keeps of those it priced, "
                              "newest: starting one of them on PostgreSQL reads no fare first")
    max_trip_km: float = setting("MAX_TRIP_KM", 300.0, KM, "the longest trip, straight and by road")
    # Rides
    offer_timeout: float = setting("OFFER_TIMEOUT", 30.0, SECONDS,
                                   "how long a driver may leave a trip request unanswered")
    # Longer than the sender's own publish takes (two connects of AMQP_CONNECT_TIMEOUT at most, a blocked
    # connection as long), so that the relay sends a row only when its sender died.
    outbox_hold: float = setting("OUTBOX_HOLD", 30.0, SECONDS,
                                 "how long the relay leaves a CreateTrip's event to the TripService publishing it "
                                 "(see State)")
    payment_local_latency: float = setting("PAYMENT_LOCAL_LATENCY", 0.0, SECONDS,
                                           "the local payment provider's pause before a session")
    # Sockets
    reconnect_window: float = setting("RECONNECT_WINDOW", 30.0, SECONDS, "how long a phone's missed events wait for it")
    ws_ping_interval: float = setting("WS_PING_INTERVAL", 25.0, SECONDS,
                                      "between pings; sockets that stop answering are dropped")
    cors_origins: tuple = setting("CORS_ORIGINS", ("*",), NAMES,
                                  "origins allowed; `*` (with a warning in the log) or a list in production")
    # Drivers' locations
    location_push_interval: float = setting("LOCATION_PUSH_INTERVAL", 1.0, SECONDS,
                                            "the least time between two driver_location frames of a trip")
    eta_refresh: float = setting("ETA_REFRESH", 15.0, SECONDS,
                                 "how long a trip's route to its pickup or destination gives its ETA before OSRM "
                                 "is asked again")
    location_max_rate: float = setting("LOCATION_MAX_RATE", 5.0, PER_SECOND,
                                       "driver.cmd.location frames per driver and gateway worker; more are dropped")
    # Identity and limits
    auth_mode: str = setting("AUTH_MODE", "token", _choice("token", "open"),
                             "`open` trusts any userID (development only)")
    auth_secret: str | None = setting("AUTH_SECRET", None, TEXT, "HS256 secret tokens are checked with")
    auth_jwks_url: str | None = setting("AUTH_JWKS_URL", None, URL, "RS256/ES256 keys tokens are checked with")
    auth_audience: str | None = setting("AUTH_AUDIENCE", None, TEXT, "the `aud` a token must have, when set")
    preview_rate: float = setting("PREVIEW_RATE", 10.0, PER_SECOND,
                                  "previews and starts per user and gateway worker")
    preview_burst: int = setting("PREVIEW_BURST", 20, COUNT, "previews and starts per user at once")
    body_timeout: float = setting("BODY_TIMEOUT", 10.0, SECONDS, "for a request's line and headers, then its body")
    metrics_allow: tuple = setting("METRICS_ALLOW", ("127.0.0.0/8", "::1/128"), NETWORKS,
                                   "networks allowed to read /metrics and /live/stats")
    # The console
    map_tiles_url: str | None = setting("MAP_TILES_URL", None, URL,
                                        "the console's map tiles (`{z}/{x}/{y}`); unset: a plain background, offline")
    # Inside the processes: timeouts, waits and bounds
    # gRPC under gevent waits for each blocking call in a thread of the worker's gevent thread pool, and
    # for every future's answer (a preview's) in one more: with gevent's 10, the 11th call in flight waited
    # for one of the first ten to end, and a preview's answer queued behind them all (bench.rush: preview
    # p50 1.15 s against start's 0.22 s). Threads are made as calls need them and end once idle.
    upstream_calls_in_flight: int = setting("UPSTREAM_CALLS_IN_FLIGHT", 100, COUNT,
                                            "gRPC calls a gateway worker has in flight at once (its gevent threads)")
    worker_connections: int = setting("WORKER_CONNECTIONS", 20_000, COUNT,
                                      "sockets and requests a gateway worker holds at once (gunicorn's "
                                      "worker_connections)")
    worker_timeout: int = setting("WORKER_TIMEOUT", 30, WHOLE_SECONDS,
                                  "after which gunicorn restarts a gateway worker that stopped answering its master")
    gateway_drain: int = setting("GATEWAY_DRAIN", 25, WHOLE_SECONDS,
                                   "a gateway worker's drain after SIGTERM (gunicorn's graceful_timeout); it exits "
                                   "as soon as the drain is done")
    readyz_timeout: float = setting("READYZ_TIMEOUT", 2.0, SECONDS, "for each dependency /readyz asks")
    asked_memory: int = setting("ASKED_MEMORY", 4096, COUNT,
                                "trip requests a gateway worker remembers, to trace the drivers' answers")
    trip_check_deadline: float = setting("TRIP_CHECK_DEADLINE", 2.0, SECONDS,
                                         "for the TripService to say a registering driver's trip (the gateway "
                                         "waits 5)")
    trip_reply_margin: float = setting("TRIP_REPLY_MARGIN", 0.5, SECONDS,
                                       "kept back from a preview's deadline to answer with an estimate")
    trip_publishers: int = setting("TRIP_PUBLISHERS", 8, COUNT,
                                   "the TripService's broker connections whose confirms may be awaited at once")
    fare_prune_every: float = setting("FARE_PRUNE_EVERY", 60.0, SECONDS, "between deletions of expired fares")
    offer_wait: float = setting("OFFER_WAIT", 1.0, SECONDS,
                                "how long a driver's answer that overtook its offer waits for it to be recorded")
    step_attempts: int = setting("STEP_ATTEMPTS", 5, COUNT,
                                 "reads and compare-and-sets before a trip's step that keeps racing is refused")
    osrm_max_body: int = setting("OSRM_MAX_BODY", 8 * 1024 * 1024, BYTES, "the largest OSRM answer read")
    redis_timeout: float = setting("REDIS_TIMEOUT", 5.0, SECONDS, "for every Redis command, and to connect")
    busy_ttl: int = setting("BUSY_TTL", 12 * 3600, WHOLE_SECONDS,
                            "after which a trip that never ends frees its driver (in Redis)")
    ended_ttl: int = setting("ENDED_TTL", 600, WHOLE_SECONDS,
                             "how long Redis remembers a trip's end; a registration reads its trip within seconds")
    handled_ttl: int = setting("HANDLED_TTL", 3600, WHOLE_SECONDS,
                               "how long Redis remembers a handled message: a copy comes within seconds (a publish "
                               "repeated) or OUTBOX_HOLD (a relayed row)")
    offer_grace: int = setting("OFFER_GRACE", 60, WHOLE_SECONDS,
                               "how long an offer's key in Redis outlives its deadline, for expired offers to be found")
    ended_remembered: int = setting("ENDED_REMEMBERED", 10_000, COUNT,
                                    "ended trips a DriverService remembers in memory, so that a late registration "
                                    "or event busies no one")
    location_deadline: float = setting("LOCATION_DEADLINE", 1.0, SECONDS,
                                       "for DriverService to say a Trip's driver location: shown without the car "
                                       "rather than a phone kept waiting")
    location_pushers: int = setting("LOCATION_PUSHERS", 8, COUNT,
                                    "driver location pushes at once: one waiting for OSRM holds up no other trip")
    location_kept_ttl: int = setting("LOCATION_KEPT_TTL", 3600, WHOLE_SECONDS,
                                     "how long Redis keeps a trip's last fix, route or push after its last write")
    dropping_remembered: int = setting("DROPPING_REMEMBERED", 10_000, COUNT,
                                       "drivers over LOCATION_MAX_RATE a gateway worker remembers, for one log line "
                                       "per driver while they stay over")
    token_leeway: float = setting("TOKEN_LEEWAY", 30.0, SECONDS,
                                  "clock difference allowed on a token's exp, nbf and iat")
    jwks_timeout: float = setting("JWKS_TIMEOUT", 5.0, SECONDS, "to fetch AUTH_JWKS_URL's key set")
    jwks_lifespan: float = setting("JWKS_LIFESPAN", 300.0, SECONDS, "how long the key set is cached")
    amqp_heartbeat: int = setting("AMQP_HEARTBEAT", 30, WHOLE_SECONDS,
                                    "between heartbeats on a broker connection (a third of it for a publisher's)")
    amqp_socket_timeout: float = setting("AMQP_SOCKET_TIMEOUT", 5.0, SECONDS, "to reach a broker node")
    amqp_connect_timeout: float = setting("AMQP_CONNECT_TIMEOUT", 10.0, SECONDS,
                                          "to open a broker connection, and a publish's wait on a blocked one")
    amqp_confirm_timeout: float = setting("AMQP_CONFIRM_TIMEOUT", 5.0, SECONDS,
                                          "a publish's wait for its confirm, before it is made again on a new "
                                          "connection (a cluster whose queue leader died may never confirm it)")
    reconnect_pause: float = setting("RECONNECT_PAUSE", 1.0, SECONDS,
                                     "before a consumer connects again to the broker, or PostgreSQL, that went away")
    # The live sockets' feed (README, Live sockets)
    feed_prefetch: int = setting("FEED_PREFETCH", 1000, COUNT,
                                 "notifications and markers in flight from its queue, or a stream, to a gateway "
                                 "worker")
    feed_ack_every: int = setting("FEED_ACK_EVERY", 100, COUNT,
                                  "messages a gateway worker acks at once (on a stream an ack only grants credit)")
    feed_ack_pause: float = setting("FEED_ACK_PAUSE", 0.2, SOME_SECONDS,
                                    "after which a gateway worker acks what it read anyway, and gives up the "
                                    "hand-overs that waited HANDOVER_WAIT")
    feed_replay_margin: float = setting("FEED_REPLAY_MARGIN", 30.0, SECONDS,
                                        "read back from the registry of sockets before RECONNECT_WINDOW when a "
                                        "gateway worker starts")
    marker_wait: float = setting("MARKER_WAIT", 5.0, SECONDS,
                                 "an upgrade's wait for its user's binding (then it opens anyway)")
    handover_wait: float = setting("HANDOVER_WAIT", 5.0, SECONDS,
                                   "a socket's wait for the `left` of the one it replaced (then that worker is "
                                   "taken for dead)")
    catchup_margin: float = setting("CATCHUP_MARGIN", 5.0, SECONDS,
                                    "read back from the notifications stream before a drained worker's `left` (or a "
                                    "socket's late bind) for the user's next socket")
    bind_channels: int = setting("BIND_CHANNELS", 8, COUNT,
                                 "channels a gateway worker binds and unbinds its users' keys over (one user's always "
                                 "on the same one)")
    max_owed: int = setting("MAX_OWED", 1000, COUNT,
                            "notifications a gateway worker keeps for one away user; the oldest go first")
    registration_check: float = setting("REGISTRATION_CHECK", 2.0, SOME_SECONDS,
                                        "between a gateway worker's questions to DriverService: whose registrations "
                                        "did it lose")
    handled_memory: int = setting("HANDLED_MEMORY", 4096, COUNT,
                                  "message ids a consumer remembers having handled (with no shared database)")
    database_connect_timeout: int = setting("DATABASE_CONNECT_TIMEOUT", 5, WHOLE_SECONDS, "to reach PostgreSQL")
    database_statement_timeout: float = setting("DATABASE_STATEMENT_TIMEOUT", 10.0, SECONDS,
                                                "for one PostgreSQL statement")
    sqlite_busy_timeout: float = setting("SQLITE_BUSY_TIMEOUT", 30.0, SECONDS,
                                         "a SQLite writer's wait for another to commit")
    outbox_batch: int = setting("OUTBOX_BATCH", 100, COUNT, "rows the outbox relay sends at a time")
    outbox_idle_wait: float = setting("OUTBOX_IDLE_WAIT", 1.0, SECONDS,
                                      "between the relay's looks at its table when no commit woke it")
    shutdown_grace: float = setting("SHUTDOWN_GRACE", 10.0, SECONDS,
                                    "a service's drain after SIGTERM, finishing the calls and messages in hand")
    # Observability
    log_level: str = setting("LOG_LEVEL", "info", _choice("debug", "info", "warning", "error", "critical"),
                             "the least a log line must be")
    log_format: str = setting("LOG_FORMAT", "text", _choice("text", "json"), "`json`: one JSON object per line")
    otel_traces_exporter: tuple = setting("OTEL_TRACES_EXPORTER", (), NAMES,
                                          "`console` or `otlp` switch tracing on (see below)")
    otel_service_name: str | None = setting("OTEL_SERVICE_NAME", None, TEXT,
                                            "names every process alike; unset: `ridesync-<process>`")
    trip_metrics_port: int | None = setting("TRIP_METRICS_PORT", None, PORT, "the TripService's metrics; unset: none")
    driver_metrics_port: int | None = setting("DRIVER_METRICS_PORT", None, PORT,
                                              "the DriverService's metrics; unset: none")
    payment_metrics_port: int | None = setting("PAYMENT_METRICS_PORT", None, PORT,
                                               "the payment service's metrics; unset: none")

    @classmethod
    def from_env(cls, env=None):
        """The settings env (os.environ by default) gives; BadSetting naming every variable that is wrong."""
        env = os.environ if env is None else env
        values, wrong = {}, []
        for each in fields(cls):
            env_name, kind = each.metadata["env"], each.metadata["kind"]
            text = env.get(env_name)
            if text is None or (each.default is None and not text.strip()):
                continue
            try:
                values[each.name] = kind.parse(text)
            except ValueError as exc:
                wrong.append(f"{env_name}={text!r} is {exc}")
        if wrong:
            raise BadSetting("; ".join(wrong))
        read = cls(**values)
        return replace(read, osrm_url=read.osrm_url.rstrip("/"),
                       trip_listen_addr=read.trip_listen_addr or _listen_addr(read.trip_service_addr),
                       driver_listen_addr=read.driver_listen_addr or _listen_addr(read.driver_service_addr))


def _listen_addr(target):
    """Where a service listens when *_LISTEN_ADDR is unset: its
    *_SERVICE_ADDR when that is a plain host:port; None when it is a target
    naming replicas (dns:///..., ipv4:a:p,b:p)."""
    if target.startswith(("dns:", "ipv4:", "ipv6:", "unix:")) or "," in target or "/" in target:
        return None
    return target


@functools.cache
def process_settings():
    """This process's settings, read from its environment once; a bad value ends the process (status 1) naming it."""
    try:
        return Settings.from_env()
    except BadSetting as exc:
        raise SystemExit(f"ridesync cannot start, bad settings: {exc}") from None


README_START = "<!-- settings: made by `python -m ridesync.settings --readme`; edit ridesync/settings.py -->"
README_END = "<!-- end of settings -->"


def readme_table():
    """The README's table of every setting: variable, default, unit, what it sets."""
    rows = ["| variable | default | unit | what it sets |", "|---|---|---|---|"]
    for each in fields(Settings):
        about = each.metadata["about"].replace("|", "\\|")
        rows.append(f"| `{each.metadata['env']}` | {_shown(each.default)} | {each.metadata['kind'].unit} | {about} |")
    return "\n".join(rows)


def _shown(default):
    if default is None or default == ():
        return "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    if isinstance(default, tuple):
        return f"`{','.join(default)}`"
    return f"`{default}`"


def readme_with_table(readme):
    """readme's text with its settings table made anew from Settings."""
    start, end = readme.index(README_START) + len(README_START), readme.index(README_END)
    return f"{readme[:start]}\n{readme_table()}\n{readme[end:]}"


def main(argv):
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    if argv == ["--readme"]:
        with open(readme, encoding="utf-8") as f:
            text = f.read()
        with open(readme, "w", encoding="utf-8") as f:
            f.write(readme_with_table(text))
    else:
        print(readme_table())


if __name__ == "__main__":
    main(sys.argv[1:])
