"""Tokens: JSON Web Tokens saying which user a phone acts for, and as what.

A token has `sub` (the user id), `role` (rider or driver) and `exp`; `aud`
is checked when an audience is set; clocks may be 30 s apart. The gateway
verifies them with a shared secret (HS256) or with the keys published at a
JWKS URL (RS256/ES256, fetched once and cached). For development and tests:

    python -m ridesync.tokens --user r1 --role rider [--ttl 3600]

prints a token signed with AUTH_SECRET."""
import argparse
import sys
import time
from dataclasses import dataclass

from ridesync.identity import ROLES, InvalidId, checked_id, is_id
from ridesync.settings import process_settings

SECRET_ALGORITHMS = ["HS256"]
KEY_SET_ALGORITHMS = ["RS256", "ES256"]


class InvalidToken(Exception):
    """The token is missing, malformed, unsigned by us, expired or says too little."""


class KeysUnavailable(Exception):
    """The JWKS URL did not answer: no token can be checked now."""


@dataclass(frozen=True)
class Identity:
    user_id: str
    role: str


def mint(secret, user_id, role, ttl=3600, audience=None, now=None):
    """A token for user_id as role, signed with secret, valid ttl seconds."""
    jwt = _jwt()
    issued = int(time.time() if now is None else now)
    claims = {"sub": user_id, "role": role, "iat": issued, "exp": issued + int(ttl)}
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


class Verifier:
    """Checks tokens with a secret, or with keys from a JWKS URL."""

    def __init__(self, secret=None, jwks_url=None, audience=None):
        if not secret and not jwks_url:
            raise ValueError("a secret or a JWKS URL is needed to check tokens")
        settings = process_settings()
        self._audience = audience or None
        self._secret = secret
        self._leeway = settings.token_leeway
        self._keys = None
        if jwks_url:
            self._keys = _jwt().PyJWKClient(jwks_url, cache_keys=True, lifespan=settings.jwks_lifespan,
                                            timeout=settings.jwks_timeout)

    def verify(self, token):
        """The Identity a token proves; InvalidToken or KeysUnavailable."""
        jwt = _jwt()
        try:
            key, algorithms = self._key_for(token)
            claims = jwt.decode(
                token, key, algorithms=algorithms, audience=self._audience, leeway=self._leeway,
                options={"require": ["sub", "exp"], "verify_aud": self._audience is not None},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise KeysUnavailable(f"the key set could not be fetched: {exc}") from None
        except (jwt.InvalidTokenError, jwt.PyJWKClientError) as exc:
            raise InvalidToken(f"the token is not valid: {exc}") from None
        user_id, role = claims.get("sub"), claims.get("role")
        if not is_id(user_id):
            raise InvalidToken("the token's sub is not a valid user id")
        if role not in ROLES:
            raise InvalidToken(f"the token's role must be one of: {', '.join(ROLES)}")
        return Identity(user_id, role)

    def _key_for(self, token):
        if self._keys is None:
            return self._secret, SECRET_ALGORITHMS
        return self._keys.get_signing_key_from_jwt(token).key, KEY_SET_ALGORITHMS


def _jwt():
    # Imported on first use, not with this module: gunicorn's master imports
    # the gateway before a worker's gevent patches ssl, and PyJWT's JWKS
    # client takes names from ssl when it is imported.
    import jwt

    return jwt


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ridesync.tokens", description="Prints a development token.")
    parser.add_argument("--user", required=True, help="the user id (the token's sub)")
    parser.add_argument("--role", required=True, choices=ROLES)
    parser.add_argument("--ttl", type=int, default=3600, help="seconds the token is valid (3600)")
    args = parser.parse_args(argv)
    settings = process_settings()
    if not settings.auth_secret:
        sys.exit("set AUTH_SECRET to the secret the gateway checks tokens with")
    try:
        checked_id("--user", args.user)
    except InvalidId as exc:
        sys.exit(str(exc))
    print(mint(settings.auth_secret, args.user, args.role, args.ttl, settings.auth_audience))


if __name__ == "__main__":
    main()
