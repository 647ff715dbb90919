"""rabbit.PublisherPool against the real broker: its connections wait for
their confirms independently."""
import threading

from ridesync import contract, rabbit
from tests.support import AMQP_URL, new_rider


def test_a_pool_publishes_on_another_connection_while_one_awaits_its_confirm(amqp_tap):
    tap = amqp_tap(contract.TRIP_CREATED)
    pool = rabbit.PublisherPool(AMQP_URL, "test-pool", 2)
    riders = [new_rider(), new_rider()]
    try:
        with pool._one():  # as if a confirm were slow to come on this one
            published = threading.Thread(target=pool.publish, args=(contract.TRIP_CREATED, riders[0], {"id": "t1"}))
            published.start()
            published.join(timeout=10)
            assert not published.is_alive(), "the publish waited for the busy connection"
        undone = []
        pool.publish_or_undo(contract.TRIP_CREATED, riders[1], {"id": "t2"}, lambda: undone.append("t2"))
    finally:
        pool.close()
    assert [tap.next()[2]["data"]["id"] for _ in riders] == ["t1", "t2"]
    assert undone == []
