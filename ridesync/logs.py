"""One log format for every process: time, level, process, what happened,
and who it happened for: the request id, the user and the trip in hand.

The ride's fields live in a context variable (per thread, per greenlet under
gevent); `bound(...)` sets them for a block, and every line logged inside it
carries them. LOG_FORMAT=json gives one JSON object per line."""
import contextvars
import json
import logging
import re
import sys
import time
import uuid
from contextlib import contextmanager

from ridesync.settings import process_settings

RIDE_FIELDS = ("request_id", "user", "trip")
REQUEST_ID_HEADER = "x-request-id"  # HTTP header, gRPC metadata key and AMQP header alike
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_ride = contextvars.ContextVar("ride", default={})


def configure(process):
    handler = logging.StreamHandler(sys.stdout)  # Procfile runners collect stdout
    handler.addFilter(_RideFilter())
    settings = process_settings()
    handler.setFormatter(_JsonFormatter(process) if settings.log_format == "json" else _TextFormatter(process))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    # pika logs each failed connection attempt as several ERROR lines and a
    # traceback; ridesync.rabbit says it once, with what it will do about it.
    logging.getLogger("pika").setLevel(logging.CRITICAL)


def bind(**fields):
    """From now on, log lines carry these ride fields (None ones are left as
    they were); a token that undoes it (its var's reset)."""
    return _ride.set({**_ride.get(), **{k: v for k, v in fields.items() if v}})


@contextmanager
def bound(**fields):
    """Within the block, log lines carry these ride fields (None ones are left as they were)."""
    token = bind(**fields)
    try:
        yield
    finally:
        _ride.reset(token)


def ride_field(name):
    return _ride.get().get(name)


def request_id_from(value):
    """The caller's request id when it is a sane one, else a new one."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str) and _REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


class _RideFilter(logging.Filter):
    def filter(self, record):
        ride = _ride.get()
        for name in RIDE_FIELDS:
            setattr(record, name, ride.get(name))
        return True


def one_line(text):
    """text as one printable line: whatever a caller sent (CR, LF, a lone
    surrogate) can neither start a forged line nor break the output."""
    escaped = text.replace("\r", "\\r").replace("\n", "\\n")
    return escaped.encode("utf-8", "backslashreplace").decode("utf-8")


class _TextFormatter(logging.Formatter):
    def __init__(self, process):
        super().__init__(f"%(asctime)s %(levelname)s {process}[%(process)d] %(name)s: %(message)s")

    def formatMessage(self, record):  # before any traceback, which format() appends
        line = super().formatMessage(record)
        ride = " ".join(f"{n}={getattr(record, n)}" for n in RIDE_FIELDS if getattr(record, n, None))
        return f"{line} [{ride}]" if ride else line

    def format(self, record):
        return one_line(super().format(record))  # a traceback too: one record, one line


class _JsonFormatter(logging.Formatter):
    def __init__(self, process):
        super().__init__()
        self._process = process

    def format(self, record):
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "process": self._process,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
            **{n: getattr(record, n) for n in RIDE_FIELDS if getattr(record, n, None)},
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)
