"""Two facts a per-worker queue's hand-over rests on (bench/RESULTS.md,
"The per-worker queue"), checked on this broker in a vhost of its own:

- order: messages of several publisher connections, each routed to two
  queues, reach the two in the same order? Counted as the adjacent pairs
  of queue 1 from different publishers that queue 2 has the other way
  round. Baseline, same run: the adjacent pairs of one publisher (AMQP
  keeps one channel's order: 0 reversed).
- the bind barrier: worker A's queue is bound to a user's key while
  publishers send to it; worker B binds its queue to the key and, once
  bind-ok is in, publishes its marker M to the key. A message that missed
  B's queue must be ahead of M in A's queue (else the hand-over loses it).
  Counted: hand-overs where one came after M.

    python -m bench.queue_order --messages 5000 --publishers 4 --handovers 100
"""
import argparse
import threading
import time

import pika

from bench.support import Bench, load, machine

EXCHANGE = "bench.order"
KEY = "live.rider.user"
SETTLE = 0.5  # seconds after a hand-over's unbinds before its queues are read
PUBLISH_PAUSE = 0.001  # seconds between one publisher's messages during the hand-overs (about 1,000/s each)


def reversed_pairs(amqp_url, publishers, messages):
    """{one publisher's: [adjacent pairs in queue 1, of them reversed in queue 2], two publishers': [...]},
    keyed True and False."""
    with _channel(amqp_url) as channel:
        queues = _two_queues(channel)
        threads = [threading.Thread(target=_publish, args=(amqp_url, p, messages)) for p in range(publishers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        first, second = (_drain(channel, queue, publishers * messages) for queue in queues)
    where = {message: n for n, message in enumerate(second)}
    counted = {True: [0, 0], False: [0, 0]}
    for a, b in zip(first, first[1:]):
        pair = counted[_publisher(a) == _publisher(b)]
        pair[0] += 1
        pair[1] += where[a] > where[b]
    return counted


def barrier_broken(amqp_url, publishers, handovers):
    """(messages only in A's queue, hand-overs where one of them came after B's marker there)."""
    stop = threading.Event()
    threads = [threading.Thread(target=_publish, args=(amqp_url, p, None, stop)) for p in range(publishers)]
    only_a = broken = 0
    with _channel(amqp_url) as channel:
        for thread in threads:
            thread.start()
        try:
            for n in range(handovers):
                a = _queue(channel)
                time.sleep(0.02)  # A holds the user a while
                b = _queue(channel)  # returns once bind-ok is in
                marker = f"M:{n}"
                channel.basic_publish(EXCHANGE, KEY, marker.encode())
                time.sleep(0.02)
                for queue in (a, b):
                    channel.queue_unbind(queue, EXCHANGE, KEY)
                time.sleep(SETTLE)  # what was routed before the unbinds is in the queues
                in_a, in_b = _drain(channel, a), set(_drain(channel, b))
                missed = [message for message in in_a if message not in in_b]
                only_a += len(missed)
                broken += any(in_a.index(message) > in_a.index(marker) for message in missed)
                for queue in (a, b):
                    channel.queue_delete(queue)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    return only_a, broken


class _channel:
    def __init__(self, amqp_url):
        self._url = amqp_url

    def __enter__(self):
        self._connection = pika.BlockingConnection(pika.URLParameters(self._url))
        channel = self._connection.channel()
        channel.exchange_declare(EXCHANGE, "direct")
        return channel

    def __exit__(self, *_):
        self._connection.close()


def _two_queues(channel):
    return [_queue(channel) for _ in range(2)]


def _queue(channel):
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, EXCHANGE, KEY)
    return queue


def _publish(amqp_url, publisher, messages, stop=None):
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    n = 0
    while (stop is None and n < messages) or (stop is not None and not stop.is_set()):
        channel.basic_publish(EXCHANGE, KEY, f"{publisher}:{n}".encode())
        n += 1
        if stop is not None:
            time.sleep(PUBLISH_PAUSE)
    connection.close()


def _drain(channel, queue, expected=None):
    got = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        method, _props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            if expected is None or len(got) >= expected:
                return got
            time.sleep(0.05)
            continue
        got.append(body.decode())
    raise RuntimeError(f"{queue}: {len(got)} of {expected} messages within 60 s")


def _publisher(message):
    return message.split(":")[0]


def run(messages=5000, publishers=4, handovers=100):
    print(f"queue order: {publishers} publishers x {messages} messages to two queues, then {handovers} hand-overs; "
          f"{machine()}", flush=True)
    print(f"  machine before: {load()}", flush=True)
    with Bench("queue-order") as bench:
        counted = reversed_pairs(bench.amqp_url, publishers, messages)
        only_a, broken = barrier_broken(bench.amqp_url, publishers, handovers)
    (same, same_reversed), (cross, reversed_) = counted[True], counted[False]
    print(f"  baseline: adjacent pairs of queue 1 from one publisher {same}, reversed in queue 2 {same_reversed}")
    print(f"  adjacent pairs of queue 1 from different publishers {cross}, reversed in queue 2 {reversed_} "
          f"({100 * reversed_ / max(cross, 1):.2f}%)")
    print(f"  bind barrier: {handovers} hand-overs, {only_a} messages only in A's queue, "
          f"hand-overs with one of them after B's marker: {broken}")
    print(f"  machine after: {load()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="per publisher, for the order check")
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--handovers", type=int, default=100)
    args = parser.parse_args()
    run(args.messages, args.publishers, args.handovers)


if __name__ == "__main__":
    main()
