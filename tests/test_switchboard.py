"""Who is connected to a worker: a newer socket of a user replaces an older
one, wherever it opened, and never the other way round."""
import gevent

from ridesync.gateway.phones import REPLACED, Switchboard


class Phone:
    def __init__(self, user_id, session, connected_at):
        self.role, self.user_id, self.session, self.connected_at = "rider", user_id, session, connected_at
        self.replaced, self.closed = False, None

    def close(self, code, reason):
        self.closed = (code, reason)


def test_a_newer_socket_on_another_worker_replaces_this_one():
    board, here = Switchboard(), Phone("r1", "s-here", connected_at=100.0)
    board.connect(here)
    board.take_over("rider", "r1", "s-elsewhere", since=101.0)
    gevent.sleep(0)  # the close runs in a greenlet of its own
    assert here.replaced and here.closed == REPLACED and len(board) == 0


def test_a_late_notice_about_an_older_socket_leaves_the_newer_one_open():
    board, here = Switchboard(), Phone("r1", "s-here", connected_at=100.0)
    board.connect(here)
    board.take_over("rider", "r1", "s-older", since=99.0)
    board.take_over("rider", "r1", "s-here", since=100.0)  # this socket's own notice
    gevent.sleep(0)
    assert not here.replaced and here.closed is None and len(board) == 1
