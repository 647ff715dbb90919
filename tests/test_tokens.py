"""Tokens (ridesync/tokens.py): what a valid token is, with a shared secret
and with keys published at a JWKS URL (a real HTTP server on loopback)."""
import json
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ridesync.settings import Settings
from ridesync.tokens import Identity, InvalidToken, KeysUnavailable, Verifier, mint
from tests.support import ROOT, answer_http, closed_port_address, serve_http

SECRET = "a-secret-of-thirty-two-bytes-or-more"
LEEWAY = Settings().token_leeway


def test_a_minted_token_says_who_and_as_what():
    assert Verifier(SECRET).verify(mint(SECRET, "r1", "rider")) == Identity("r1", "rider")


def test_the_command_line_prints_a_token_the_gateway_takes():
    printed = subprocess.run([sys.executable, "-m", "ridesync.tokens", "--user", "r1", "--role", "rider"], cwd=ROOT,
                             env={**os.environ, "AUTH_SECRET": SECRET}, capture_output=True, text=True, check=True)
    assert Verifier(SECRET).verify(printed.stdout.strip()) == Identity("r1", "rider")


@pytest.mark.parametrize("token, says", [
    (mint("another-secret-of-thirty-two-bytes", "r1", "rider"), "Signature verification failed"),
    (mint(SECRET, "r1", "rider", ttl=-LEEWAY - 1), "expired"),
    (mint(SECRET, "r1", "passenger"), "role must be one of: rider, driver"),
    (mint(SECRET, "r\n1", "rider"), "sub is not a valid user id"),
    (jwt.encode({"sub": "r1", "role": "rider"}, SECRET, algorithm="HS256"), 'missing the "exp" claim'),
    (jwt.encode({"sub": "r1", "role": "rider", "exp": time.time() + 60}, None, algorithm="none"), "not valid"),
    ("not.a.jwt", "not valid"),
])
def test_a_token_that_is_not_ours_or_says_too_little_is_refused(token, says):
    with pytest.raises(InvalidToken, match=says):
        Verifier(SECRET).verify(token)


def test_clocks_may_differ_by_30_seconds():
    assert Verifier(SECRET).verify(mint(SECRET, "r1", "rider", ttl=-LEEWAY + 2)).user_id == "r1"


def test_the_audience_is_checked_when_one_is_set():
    verifier = Verifier(SECRET, audience="ridesync")
    assert verifier.verify(mint(SECRET, "r1", "rider", audience="ridesync")).user_id == "r1"
    for other in (mint(SECRET, "r1", "rider", audience="elsewhere"), mint(SECRET, "r1", "rider")):
        with pytest.raises(InvalidToken):
            verifier.verify(other)


class KeySet:
    """A JWKS endpoint on loopback publishing an RSA and an EC key; counts its
    requests; answers 503 while `failing`."""

    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        keys = [
            {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key())), "kid": "rsa-1", "alg": "RS256"},
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key())), "kid": "ec-1", "alg": "ES256"},
        ]
        body = json.dumps({"keys": keys}).encode()
        self.requests = 0
        self.failing = False
        key_set = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                key_set.requests += 1
                answer_http(self, 503, b"{}") if key_set.failing else answer_http(self, 200, body)

        self._server, base = serve_http(Handler)
        self.url = f"{base}/.well-known/jwks.json"

    def token(self, user_id, role, kid="rsa-1", **claims):
        key, algorithm = (self.rsa, "RS256") if kid == "rsa-1" else (self.ec, "ES256")
        payload = {"sub": user_id, "role": role, "exp": int(time.time()) + 60, **claims}
        return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})

    def close(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def key_set():
    published = KeySet()
    yield published
    published.close()


def test_keys_from_a_jwks_url_check_rs256_and_es256_tokens_and_are_fetched_once(key_set):
    verifier = Verifier(jwks_url=key_set.url)
    assert verifier.verify(key_set.token("d1", "driver")) == Identity("d1", "driver")
    assert verifier.verify(key_set.token("r1", "rider", kid="ec-1")) == Identity("r1", "rider")
    for _ in range(20):
        verifier.verify(key_set.token("r1", "rider"))
    assert key_set.requests == 1  # cached
    with pytest.raises(InvalidToken):  # a secret-signed token is no good where keys are published
        verifier.verify(mint(SECRET, "r1", "rider"))


def test_an_unreachable_jwks_url_is_not_the_callers_fault(key_set):
    with pytest.raises(KeysUnavailable):
        Verifier(jwks_url=f"http://{closed_port_address()}/jwks.json").verify(key_set.token("r1", "rider"))
