"""A gateway worker's queue that is lost (deleted while it is read; gone
when the worker's broker connection comes back, as after a broker restart
that lost a classic queue) loses no rider's event: the worker makes it
anew, binds its users again, and reads back from the record what the lost
queue held or missed. Real gunicorn, real RabbitMQ, real sockets."""
import re
import threading

import pika

from ridesync import contract
from ridesync.rabbit import Publisher
from tests.ride import new_id, ride  # noqa: F401 (ride is a fixture)
from tests.support import AMQP_URL, wait_until
from tests.test_live import close_connections, live_stats, our_connections

RIDERS = 4


class Events:
    """Each rider's events, numbered, published in turn all the while (a thread)."""

    def __init__(self, rider_ids):
        self.published = {rider_id: [] for rider_id in rider_ids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish_all_the_while)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_exc):
        self._stop.set()
        self._thread.join(30)

    def count(self):
        return sum(len(ids) for ids in self.published.values())

    def _publish_all_the_while(self):
        publisher = Publisher(AMQP_URL, "test")
        try:
            while not self._stop.wait(0.005):
                for rider_id, ids in self.published.items():
                    publisher.publish(contract.TRIP_CREATED, rider_id, {"id": len(ids)})
                    ids.append(len(ids))
        finally:
            publisher.close()


def delete_queue(queue):
    with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as connection:
        connection.channel().queue_delete(queue)


def each_gets_each_once_in_order(phones, events):
    for rider_id, phone in phones.items():
        published, got = events.published[rider_id], []
        while len(got) < len(published):
            got.append(phone.next(contract.TRIP_CREATED, timeout=15)["data"]["id"])
        assert got == published, f"{rider_id}: lost {sorted(set(published) - set(got))}, or twice, or out of order"
        assert phone.poll(contract.TRIP_CREATED, timeout=0.5) is None, f"{rider_id}: more than was published"


def riders_on_one_worker(ride, **settings):
    url = ride.replica(workers=1, name="gateway-lost", **settings)[1]
    phones = {rider_id: ride.rider(rider_id, url) for rider_id in (new_id("rider") for _ in range(RIDERS))}
    stats = wait_until(lambda: (s := live_stats(url))["consuming"] == RIDERS and s["queue"] and s,
                       message="every rider served")
    return url, phones, stats


def go_on_publishing_past(events, url, ride, queue, how):
    """Until the worker reads its queue made anew and its riders are served again, and some events after."""
    wait_until(lambda: re.search(rf"queue {re.escape(queue)} was gone on reconnect \(lost {how}, .*: {RIDERS} users catch up",
                                 ride.gateway_log()), timeout=20, message="the worker to find its queue gone")
    wait_until(lambda: live_stats(url)["queue"] == queue, timeout=20, message="the queue read again")
    after = events.count()
    wait_until(lambda: events.count() > after + 10 * RIDERS, timeout=20, message="more events published")


def test_a_workers_queue_deleted_while_it_is_read_loses_no_riders_event_nor_repeats_one(ride):
    url, phones, stats = riders_on_one_worker(ride)
    with Events(phones) as events:
        wait_until(lambda: all(ids for ids in events.published.values()), message="events for every rider")
        delete_queue(stats["queue"])
        go_on_publishing_past(events, url, ride, stats["queue"], "when the broker cancelled its consumer")
    assert f"the broker cancelled the feed's consumer of {stats['queue']}" in ride.gateway_log()
    each_gets_each_once_in_order(phones, events)


def test_a_queue_gone_when_the_worker_reconnects_as_after_a_broker_restart_loses_no_riders_event(ride):
    url, phones, stats = riders_on_one_worker(ride, RECONNECT_PAUSE="5")
    with Events(phones) as events:
        wait_until(lambda: all(ids for ids in events.published.values()), message="events for every rider")
        _channels, feeds = max((channels, name) for process, channels, name in our_connections()
                               if process == f"gateway-{stats['pid']}")  # the feed's: its binders' channels too
        close_connections([feeds])
        delete_queue(stats["queue"])  # no consumer now; the worker reconnects RECONNECT_PAUSE later
        go_on_publishing_past(events, url, ride, stats["queue"], "with the connection")
    assert "cancelled the feed's consumer" not in ride.gateway_log(), "deleted before the worker reconnected"
    each_gets_each_once_in_order(phones, events)
