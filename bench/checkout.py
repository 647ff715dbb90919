"""What a PostgreSQL request pays to survive a server restart: a pooled
connection's checkout plus `SELECT 1`, with the engine Database uses (one
poll() of the connection's socket at checkout), against the same engine with
no check (the baseline) and with SQLAlchemy's pool_pre_ping (a round trip
per checkout), in the same run. Rounds alternate the three; the figure is
the median round's mean, in microseconds. On a busy machine the steadier
figures are the checks alone: our poll() against pre_ping's round trip
(the dialect's do_ping), on one connection.

    .venv/bin/python -m bench.checkout [--url postgresql://...] [--calls 5000] [--rounds 7]"""
import argparse
import os
import statistics
import time

from sqlalchemy import create_engine, text

from ridesync.database import _ended_by_server, engine_for

DEFAULT_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres:postgres@localhost:5432/postgres")


def engines(url):
    plain = url.replace("postgresql://", "postgresql+psycopg://", 1)
    return {"no check (baseline)": create_engine(plain, pool_size=1),
            "poll() at checkout (ours)": engine_for(url),
            "pool_pre_ping": create_engine(plain, pool_size=1, pool_pre_ping=True)}


def mean_us(engine, calls):
    started = time.perf_counter()
    for _ in range(calls):
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    return (time.perf_counter() - started) / calls * 1e6


def run(url, calls, rounds):
    measured = engines(url)
    for engine in measured.values():
        mean_us(engine, 100)  # connected and warm
    print(f"machine load before: {os.getloadavg()}")
    figures = {name: [] for name in measured}
    for _ in range(rounds):
        for name, engine in measured.items():
            figures[name].append(mean_us(engine, calls))
    print(f"machine load after: {os.getloadavg()}")
    baseline = statistics.median(figures["no check (baseline)"])
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"{name:28} {median:8.1f} us per checkout + SELECT 1   x{median / baseline:.3f} of the baseline")
    checks_alone(measured["pool_pre_ping"], calls, rounds)
    for engine in measured.values():
        engine.dispose()


def checks_alone(engine, calls, rounds):
    with engine.connect() as conn:
        dbapi_connection = conn.connection.dbapi_connection
        checks = {"poll() (ours)": lambda: _ended_by_server(dbapi_connection, None, None),
                  "do_ping (pool_pre_ping)": lambda: engine.dialect.do_ping(dbapi_connection)}
        figures = {name: [] for name in checks}
        for _ in range(rounds):
            for name, check in checks.items():
                started = time.perf_counter()
                for _ in range(calls):
                    check()
                figures[name].append((time.perf_counter() - started) / calls * 1e6)
    ping = statistics.median(figures["do_ping (pool_pre_ping)"])
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"the check alone: {name:24} {median:8.2f} us   x{median / ping:.4f} of pre_ping's")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    run(args.url, args.calls, args.rounds)


if __name__ == "__main__":
    main()
