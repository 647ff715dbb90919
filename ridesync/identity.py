"""Who a request acts for: the user-id rule every edge applies, and the
identity the gateway authenticated, carried to the services (gRPC metadata
and AMQP headers) the way the request id is.

A user id is 1 to 128 characters of A-Z a-z 0-9 . _ : @ - (DESIGN.md,
"Identity"): nothing else reaches the broker, a log line or a service."""
import contextvars
import re
from contextlib import contextmanager

USER_ID_HEADER = "x-user-id"  # gRPC metadata key and AMQP header alike
USER_ROLE_HEADER = "x-user-role"
ROLES = ("rider", "driver")
MAX_ID_LENGTH = 128
_ID = re.compile(rf"[A-Za-z0-9._:@-]{{1,{MAX_ID_LENGTH}}}")

_acting = contextvars.ContextVar("acting", default=None)


class InvalidId(ValueError):
    pass


def checked_id(name, value):
    """value when it is a well-formed id (a user's, a fare's, a trip's); InvalidId naming the field otherwise."""
    if not isinstance(value, str) or not value:
        raise InvalidId(f"{name} is required and must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidId(f"{name} must be at most {MAX_ID_LENGTH} characters")
    if not _ID.fullmatch(value):
        raise InvalidId(f"{name} may hold only letters, digits and . _ : @ -")
    return value


def is_id(value):
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def act_as(user_id, role):
    """From now on, calls and messages go out on behalf of this user (role
    may be None in open mode); a token that undoes it (its var's reset)."""
    return _acting.set((user_id, role))


@contextmanager
def acting_as(user_id, role):
    """Within the block, calls and messages go out on behalf of this user (role may be None in open mode)."""
    token = act_as(user_id, role)
    try:
        yield
    finally:
        _acting.reset(token)


def outgoing_headers():
    """The headers (gRPC metadata or AMQP) naming who the gateway acts for now; empty when no one."""
    acting = _acting.get()
    if acting is None:
        return {}
    user_id, role = acting
    return {USER_ID_HEADER: user_id, **({USER_ROLE_HEADER: role} if role else {})}


def from_headers(headers):
    """(user id, role) that the gateway put in these headers, or (None, None)."""
    user_id = headers.get(USER_ID_HEADER)
    role = headers.get(USER_ROLE_HEADER)
    return (user_id if is_id(user_id) else None), (role if role in ROLES else None)
