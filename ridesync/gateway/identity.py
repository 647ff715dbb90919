"""Who a request or socket acts for (DESIGN.md, "Identity").

In token mode, the user of the bearer token (`Authorization: Bearer`, or
`?token=` on a socket, which browsers cannot give headers); a userID given
as well must be that user, and the token's role must be the endpoint's. In
open mode, the userID given. Checked in this order: a malformed id is a 400,
then no valid token a 401 (before any upgrade), then a token that does not
fit a 403. The user then travels with everything the request causes."""
import ipaddress
import logging

from flask import current_app, g, request

from ridesync import identity, logs, tokens
from ridesync.gateway.errors import ApiError, invalid

log = logging.getLogger(__name__)
OPEN, TOKEN = "open", "token"
CHALLENGE = {"WWW-Authenticate": "Bearer"}
INVALID_TOKEN_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class MisconfiguredAuth(RuntimeError):
    """The settings do not say how to check tokens."""


def verifier_for(settings):
    """The token verifier the settings call for, None in open mode."""
    if checked_auth_mode(settings) == OPEN:
        return None
    return tokens.Verifier(settings.auth_secret, settings.auth_jwks_url, settings.auth_audience)


def checked_auth_mode(settings):
    """AUTH_MODE, once the settings say how to check tokens; MisconfiguredAuth saying what to set."""
    if settings.auth_mode == TOKEN and not settings.auth_secret and not settings.auth_jwks_url:
        raise MisconfiguredAuth(
            "AUTH_MODE=token (the default) needs a key to check tokens: set AUTH_SECRET (HS256) "
            "or AUTH_JWKS_URL (RS256/ES256 keys); or AUTH_MODE=open to trust any userID (development only)"
        )
    return settings.auth_mode


def acting_user(claimed, role, *, query_token=False):
    """The id of the user this request acts for, as a `role` ("rider" or
    "driver", None for either); claimed is the userID the request gave, or None."""
    if claimed is not None:
        claimed = checked(claimed, "userID")
    verifier = current_app.extensions["ridesync.verifier"]
    if verifier is None:
        if claimed is None:
            raise invalid("userID is required and must be a non-empty string")
        _act_as(claimed, None)
        return claimed
    me = _authenticated(verifier, query_token)
    if role is not None and me.role != role:
        raise ApiError(403, "permission_denied", f"this is for {role}s; the token is a {me.role}'s")
    if claimed is not None and claimed != me.user_id:
        raise ApiError(403, "permission_denied", "userID is not the token's user")
    _act_as(me.user_id, me.role)
    return me.user_id


def operator_networks(settings):
    """The networks of METRICS_ALLOW (the settings checked each)."""
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in settings.metrics_allow)


def operators_only():
    """403 unless the caller's address is in METRICS_ALLOW (loopback by default)."""
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        address = None
    if address is None or not any(address in network for network in current_app.extensions["ridesync.operators"]):
        raise ApiError(403, "permission_denied", "this is for operators; ask from a network in METRICS_ALLOW")


def origin_allowed():
    """403 for a browser page from an origin outside CORS_ORIGINS (when it
    is a list) opening a socket; apps that send no Origin are let through."""
    origins = current_app.config["RIDESYNC"].cors_origins
    origin = request.headers.get("Origin")
    if origin is not None and "*" not in origins and origin not in origins:
        raise ApiError(403, "permission_denied", "sockets may not be opened from this origin (CORS_ORIGINS)")


def checked(value, name):
    """An id from a request (user, fare, trip), or a 400 naming the field."""
    try:
        return identity.checked_id(name, value)
    except identity.InvalidId as exc:
        raise invalid(str(exc)) from None


def _authenticated(verifier, query_token):
    token = _bearer_token() or (request.args.get("token") if query_token else None)
    if not token:
        where = "an Authorization: Bearer header or ?token=" if query_token else "an Authorization: Bearer header"
        raise ApiError(401, "unauthenticated", f"a token is required: send {where}", CHALLENGE)
    try:
        return verifier.verify(token)
    except tokens.InvalidToken as exc:
        raise ApiError(401, "unauthenticated", str(exc), INVALID_TOKEN_CHALLENGE) from None
    except tokens.KeysUnavailable as exc:
        log.error("tokens cannot be checked: %s", exc)
        raise ApiError(503, "unavailable", "tokens cannot be checked right now; try again shortly") from None


def _bearer_token():
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _act_as(user_id, role):
    """Log lines, gRPC calls and messages of the rest of this request carry the user."""
    g.request_context += (logs.bind(user=user_id), identity.act_as(user_id, role))
