"""What checking a token costs the gateway, against open mode in the same run.

Both modes are the real gateway app (`create_app`), driven in process
through Flask's test client, so only the gateway's own CPU is timed:
- per HTTP request: `POST /trip/preview` with a bearer token (token mode) or
  a userID (open mode), refused with 400 for its pickup right after the
  identity and rate checks, before anything goes upstream;
- per socket upgrade: `GET /ws/drivers?...&token=` with a package that does
  not exist, refused with 400 right after the identity check, before the
  broker or DriverService are asked.
Rounds alternate the modes; the figure is the median round's mean. The
check alone (`Verifier.verify`, HS256 with a secret; RS256 and ES256 with
keys as a JWKS URL gives them once cached) is timed too: on a busy machine
it is the steadier figure.

    .venv/bin/python -m bench.auth [--requests 2000] [--rounds 7]"""
import argparse
import json
import statistics
import time

from ridesync.gateway import create_app
from ridesync.settings import Settings
from ridesync.tokens import Verifier, mint

SECRET = "bench-secret-of-thirty-two-bytes-or-more"
BAD_PICKUP = {"latitude": 91, "longitude": 0}


def gateway(mode):
    return create_app(Settings.from_env({
        "AUTH_MODE": mode, "AUTH_SECRET": SECRET, "PREVIEW_RATE": "1e9", "PREVIEW_BURST": "1000000000",
        "TRIP_SERVICE_ADDR": "127.0.0.1:9", "DRIVER_SERVICE_ADDR": "127.0.0.1:9",
    })).test_client()


def http_request(client, token):
    body = json.dumps({"userID": "r1", "pickup": BAD_PICKUP, "destination": BAD_PICKUP})
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return lambda: client.post("/trip/preview", data=body, headers=headers, content_type="text/plain")


def socket_upgrade(client, token):
    path = "/ws/drivers?userID=d1&packageSlug=rocket" + (f"&token={token}" if token else "")
    return lambda: client.get(path)


def per_call_ms(call, count):
    assert call().status_code == 400  # refused where it should be, past the identity check
    return per_call(call, count)


def verify_ms(count):
    """ms per Verifier.verify: HS256, and RS256/ES256 with keys already fetched."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    figures = {"HS256": (Verifier(SECRET), mint(SECRET, "r1", "rider"))}
    for name, key in (("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
                      ("ES256", ec.generate_private_key(ec.SECP256R1()))):
        verifier = Verifier(SECRET)
        verifier._key_for = lambda _token, key=key, name=name: (key.public_key(), [name])  # a cached JWKS key
        token = jwt.encode({"sub": "r1", "role": "rider", "exp": int(time.time()) + 600}, key, algorithm=name)
        figures[name] = (verifier, token)
    return {name: per_call(lambda: verifier.verify(token), count) for name, (verifier, token) in figures.items()}


def per_call(call, count):
    started = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - started) * 1000 / count


def run(requests, rounds):
    open_client, token_client = gateway("open"), gateway("token")
    rider, driver = mint(SECRET, "r1", "rider"), mint(SECRET, "d1", "driver")
    for name, make, token in (("HTTP request", http_request, rider), ("socket upgrade", socket_upgrade, driver)):
        opened, checked = make(open_client, None), make(token_client, token)
        pairs = [(per_call_ms(opened, requests), per_call_ms(checked, requests)) for _ in range(rounds)]
        open_ms = statistics.median(o for o, _ in pairs)
        token_ms = statistics.median(t for _, t in pairs)
        cost = statistics.median(t - o for o, t in pairs)
        print(f"{name}: open {open_ms:.3f} ms, token {token_ms:.3f} ms; token checking costs {cost:.3f} ms "
              f"(token/open {token_ms / open_ms:.2f}x; target under 0.2 ms: {'met' if cost < 0.2 else 'missed'})")
    checks = verify_ms(requests)
    print("the check alone: " + ", ".join(f"{name} {ms:.3f} ms" for name, ms in checks.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per mode and round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    run(args.requests, args.rounds)


if __name__ == "__main__":
    main()
