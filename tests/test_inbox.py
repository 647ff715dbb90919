"""An inbox's in-memory side, without a broker: what the hub hands it is
written to the socket once, in order, each acked after it was written; a
greenlet runs only while there is something to write."""
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


class Socket:
    """A phone's write: records what it wrote; `gone` makes it fail."""

    def __init__(self):
        self.written, self.gone = [], False

    def write(self, delivery):
        if self.gone:
            return False
        gevent.sleep(0)  # a real write switches greenlets
        self.written.append(delivery.tag)
        return True


def new_inbox():
    return Inbox(None, "rider-1", "notify_trip_created", contract.TRIP_CREATED)


def delivery(channel, tag):
    return Delivery(channel, tag, f"message-{tag}", contract.TRIP_CREATED, {"n": tag}, {})


def settle():
    gevent.sleep(0.01)


def test_every_delivery_is_written_once_in_order_then_acked():
    inbox, channel, socket = new_inbox(), Channel(), Socket()
    inbox.write_to(socket.write)
    for tag in (1, 2, 3):
        inbox._take(delivery(channel, tag))
    settle()
    inbox._take(delivery(channel, 4))
    settle()
    assert socket.written == [1, 2, 3, 4]
    assert channel.acked == [1, 2, 3, 4]


def test_an_idle_inbox_holds_no_greenlet():
    inbox, channel, socket = new_inbox(), Channel(), Socket()
    inbox.write_to(socket.write)
    assert inbox._writer is None
    inbox._take(delivery(channel, 1))
    assert inbox._writer is not None
    settle()
    assert inbox._writer is None and socket.written == [1]


def test_deliveries_taken_before_the_socket_opened_wait_for_it():
    inbox, channel, socket = new_inbox(), Channel(), Socket()
    for tag in (1, 2):
        inbox._take(delivery(channel, tag))
    settle()
    assert socket.written == [] and channel.acked == []
    inbox.write_to(socket.write)
    settle()
    assert socket.written == [1, 2]


def test_what_a_gone_socket_did_not_take_is_given_back_to_the_broker():
    inbox, channel, socket = new_inbox(), Channel(), Socket()
    inbox.write_to(socket.write)
    inbox._take(delivery(channel, 1))
    settle()
    socket.gone = True
    for tag in (2, 3):
        inbox._take(delivery(channel, tag))
    settle()
    inbox._give_back()
    assert channel.acked == [1]
    assert sorted(channel.nacked) == [(2, True), (3, True)]


def test_a_lost_channel_drops_what_was_not_written():
    inbox, channel, socket = new_inbox(), Channel(), Socket()
    for tag in (1, 2):
        inbox._take(delivery(channel, tag))
    inbox._forget()  # the broker requeued them; they come again on the new channel
    inbox._take(delivery(channel, 7))
    inbox.write_to(socket.write)
    settle()
    assert socket.written == [7]
    assert not inbox.ready.is_set()
