"""The fan-out baseline's consumer: raw pika, one durable queue (single
active consumer, x-expires) bound to the `trip` exchange under a key of its
own (bench.floor), prefetch 16, each message
timed on arrival and acked. Prints {"event": "ready"} once consuming; stops
after --expect messages, --idle seconds without one (after the first), or
--timeout; deletes its queue, writes [owner, seq, published, received]
rows to --out and prints the CPU time it used from ready to done.

    python -m bench.floor --expect 10000 --out floor.json
"""
import argparse
import json
import os
import sys
import time

import pika

from ridesync import contract, rabbit

QUEUE = ROUTING_KEY = "bench.floor"
PREFETCH = 16


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    connection = pika.BlockingConnection(rabbit.connection_parameters(os.environ["AMQP_URL"], "bench-floor"))
    channel = connection.channel()
    channel.queue_declare(QUEUE, durable=True, arguments={"x-expires": 60_000, "x-single-active-consumer": True})
    channel.queue_bind(QUEUE, contract.TRIP_EXCHANGE, ROUTING_KEY)
    channel.basic_qos(prefetch_count=PREFETCH)
    rows = []

    def on_message(ch, method, _props, body):
        received = time.time()
        owner, data = contract.open_envelope(body)
        rows.append((owner, data["seq"], data["t"], received))
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(QUEUE, on_message)
    print(json.dumps({"event": "ready"}), flush=True)
    cpu_at_ready = time.process_time()
    deadline = time.monotonic() + args.timeout
    last, seen = time.monotonic(), 0
    try:
        while len(rows) < args.expect and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.2)
            if len(rows) != seen:
                last, seen = time.monotonic(), len(rows)
            elif rows and time.monotonic() - last > args.idle:
                break
    finally:
        channel.queue_delete(QUEUE)
        connection.close()
        with open(args.out, "w") as out:
            json.dump(rows, out)
    print(json.dumps({"event": "done", "received": len(rows), "cpu_seconds": time.process_time() - cpu_at_ready}),
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
