"""An inbox's in-memory side, without a broker: what the hub hands it comes
out to the socket's greenlet once, in order; a lost channel drops what was
not handed out yet."""
import gevent

from ridesync import contract
from ridesync.gateway.inboxes import Delivery, Inbox


class Channel:
    is_open = True

    def __init__(self):
        self.acked, self.nacked = [], []

    def basic_ack(self, tag):
        self.acked.append(tag)

    def basic_nack(self, tag, requeue):
        self.nacked.append((tag, requeue))


def new_inbox():
    return Inbox(None, "rider-1", "notify_trip_created", contract.TRIP_CREATED)


def delivery(channel, tag):
    return Delivery(channel, tag, f"message-{tag}", contract.TRIP_CREATED, {"n": tag}, {})


def read(inbox, count):
    """The next count deliveries, read by another greenlet as a socket's writer does."""
    got = []

    def reader():
        for item in inbox:
            got.append(item)
            if len(got) == count:
                return

    greenlet = gevent.spawn(reader)
    greenlet.join(timeout=2)
    greenlet.kill()
    return got


def test_a_waiting_reader_gets_every_delivery_once_in_order():
    inbox, channel = new_inbox(), Channel()
    got = []

    def reader():
        for item in inbox:
            got.append(item.tag)

    greenlet = gevent.spawn(reader)
    gevent.sleep(0)  # the reader is waiting on an empty inbox
    for tag in (1, 2, 3):
        inbox._take(delivery(channel, tag))
    gevent.sleep(0.01)
    inbox._take(delivery(channel, 4))
    gevent.sleep(0.01)
    greenlet.kill()
    assert got == [1, 2, 3, 4]


def test_deliveries_taken_before_anyone_reads_wait_for_the_reader():
    inbox, channel = new_inbox(), Channel()
    for tag in (1, 2):
        inbox._take(delivery(channel, tag))
    assert [d.tag for d in read(inbox, 2)] == [1, 2]


def test_acked_deliveries_are_not_given_back():
    inbox, channel = new_inbox(), Channel()
    for tag in (1, 2, 3):
        inbox._take(delivery(channel, tag))
    first, _second = read(inbox, 2)
    inbox.ack(first)
    inbox._give_back()
    assert channel.acked == [1]
    assert channel.nacked == [(2, True), (3, True)]


def test_a_lost_channel_drops_what_was_not_handed_out():
    inbox, channel = new_inbox(), Channel()
    for tag in (1, 2):
        inbox._take(delivery(channel, tag))
    inbox._forget()  # the broker requeued them; they come again on the new channel
    inbox._take(delivery(channel, 7))
    assert [d.tag for d in read(inbox, 1)] == [7]
    assert not inbox.ready.is_set()
