"""The trip's lifecycle (ride/lifecycle.py) as plain Python: every step in
every status, by whom it is allowed, and what it gives."""
from dataclasses import replace

import pytest

from ridesync.ride import lifecycle
from ridesync.ride.lifecycle import (ACCEPTED, ARRIVED, CANCELLED, COMPLETED, IN_PROGRESS, NO_DRIVERS_FOUND, PENDING,
                                     NotYours, StepRefused)
from tests.service_support import trip as pending_trip

STATUSES = (PENDING, ACCEPTED, ARRIVED, IN_PROGRESS, COMPLETED, CANCELLED, NO_DRIVERS_FOUND)
RIDER, DRIVER, OTHER = "r1", "d1", "d2"


def trip(status, offered_to=None, declined=()):
    """A trip of RIDER in status; driven by DRIVER from accepted on (and when cancelled or completed)."""
    driven = status in (ACCEPTED, ARRIVED, IN_PROGRESS, COMPLETED, CANCELLED)
    return replace(pending_trip(rider=RIDER), status=status, driver={"id": DRIVER} if driven else None,
                   offered_to=offered_to, declined=declined)


# (step, status) -> what it gives: a status, None (already happened) or the refusal.
DRIVER_STEP_OUTCOMES = {
    "arrived": {ACCEPTED: ARRIVED, ARRIVED: None, IN_PROGRESS: None, COMPLETED: None},
    "started": {ARRIVED: IN_PROGRESS, IN_PROGRESS: None, COMPLETED: None},
    "completed": {IN_PROGRESS: COMPLETED, COMPLETED: None},
}


@pytest.mark.parametrize("step", list(DRIVER_STEP_OUTCOMES))
@pytest.mark.parametrize("status", [s for s in STATUSES if s not in (PENDING, NO_DRIVERS_FOUND)])
def test_the_drivers_steps_go_in_order_and_a_repeat_changes_nothing(step, status):
    outcomes = DRIVER_STEP_OUTCOMES[step]
    if status in outcomes:
        assert lifecycle.driver_step(trip(status), DRIVER, step) == outcomes[status]
    else:
        with pytest.raises(StepRefused, match=f"is {status}: it cannot be {step}"):
            lifecycle.driver_step(trip(status), DRIVER, step)


@pytest.mark.parametrize("step", list(DRIVER_STEP_OUTCOMES))
@pytest.mark.parametrize("status", STATUSES)
def test_only_the_trips_driver_takes_its_steps(step, status):
    for someone in (OTHER, RIDER):
        with pytest.raises(NotYours, match=f"not driven by {someone}"):
            lifecycle.driver_step(trip(status), someone, step)


def test_an_unknown_step_is_refused():
    with pytest.raises(StepRefused, match="'teleported' is not a step"):
        lifecycle.driver_step(trip(ACCEPTED), DRIVER, "teleported")


CANCEL_OUTCOMES = {
    "rider": {PENDING: CANCELLED, ACCEPTED: CANCELLED, ARRIVED: CANCELLED, CANCELLED: None},
    "driver": {ACCEPTED: CANCELLED, ARRIVED: CANCELLED, CANCELLED: None},
}


@pytest.mark.parametrize("by", ["rider", "driver"])
@pytest.mark.parametrize("status", [s for s in STATUSES if s not in (PENDING, NO_DRIVERS_FOUND)])
def test_rider_and_driver_cancel_until_the_ride_starts(by, status):
    user = RIDER if by == "rider" else DRIVER
    if status in CANCEL_OUTCOMES[by]:
        assert lifecycle.cancel(trip(status), by, user) == CANCEL_OUTCOMES[by][status]
    else:
        with pytest.raises(StepRefused, match=f"is {status}: it cannot be cancelled by its {by}"):
            lifecycle.cancel(trip(status), by, user)


@pytest.mark.parametrize("status", [PENDING, NO_DRIVERS_FOUND])
def test_the_rider_cancels_a_trip_without_a_driver_until_it_ends(status):
    if status == PENDING:
        assert lifecycle.cancel(trip(PENDING, offered_to=DRIVER), "rider", RIDER) == CANCELLED
    else:
        with pytest.raises(StepRefused):
            lifecycle.cancel(trip(status), "rider", RIDER)


@pytest.mark.parametrize("status", STATUSES)
def test_no_one_else_cancels(status):
    with pytest.raises(NotYours):
        lifecycle.cancel(trip(status), "rider", OTHER)
    with pytest.raises(NotYours):
        lifecycle.cancel(trip(status), "driver", OTHER)
    with pytest.raises(NotYours):  # the driver the trip is only offered to declines it instead
        lifecycle.cancel(trip(PENDING, offered_to=OTHER), "driver", OTHER)


def test_only_the_driver_offered_the_trip_accepts_it():
    assert lifecycle.accept(trip(PENDING, offered_to=DRIVER), DRIVER) == ACCEPTED
    for offered_to in (None, OTHER):
        with pytest.raises(NotYours, match=f"not offered to driver {DRIVER}"):
            lifecycle.accept(trip(PENDING, offered_to=offered_to), DRIVER)


@pytest.mark.parametrize("status", [s for s in STATUSES if s != PENDING])
def test_an_accept_repeated_by_the_trips_driver_changes_nothing_and_others_are_refused(status):
    if trip(status).driver_id == DRIVER:
        assert lifecycle.accept(trip(status), DRIVER) is None
    with pytest.raises(NotYours):
        lifecycle.accept(trip(status), OTHER)


def test_an_offer_left_on_a_trip_that_ended_is_refused():
    with pytest.raises(StepRefused, match="is cancelled: it cannot be accepted"):
        lifecycle.accept(replace(trip(CANCELLED), driver=None, offered_to=DRIVER), DRIVER)


def test_only_the_driver_offered_the_trip_declines_it_once():
    assert lifecycle.decline(trip(PENDING, offered_to=DRIVER), DRIVER) == PENDING
    assert lifecycle.decline(trip(PENDING, declined=(DRIVER,)), DRIVER) is None
    for offered_to in (None, OTHER):
        with pytest.raises(NotYours):
            lifecycle.decline(trip(PENDING, offered_to=offered_to), DRIVER)
    with pytest.raises(StepRefused, match="is cancelled: it cannot be declined"):
        lifecycle.decline(replace(trip(CANCELLED), offered_to=DRIVER), DRIVER)


@pytest.mark.parametrize("status", STATUSES)
def test_only_a_pending_trip_is_offered(status):
    if status == PENDING:
        assert lifecycle.offer(trip(PENDING), DRIVER) == PENDING
        assert lifecycle.offer(trip(PENDING, offered_to=DRIVER), DRIVER) is None
    else:
        with pytest.raises(StepRefused, match=f"cannot be offered to driver {DRIVER}"):
            lifecycle.offer(trip(status), DRIVER)


@pytest.mark.parametrize("status", STATUSES)
def test_a_pending_trip_ends_when_no_driver_is_left(status):
    if status == PENDING:
        assert lifecycle.no_drivers_found(trip(status)) == NO_DRIVERS_FOUND
    elif status == NO_DRIVERS_FOUND:
        assert lifecycle.no_drivers_found(trip(status)) is None
    else:
        with pytest.raises(StepRefused):
            lifecycle.no_drivers_found(trip(status))


def test_a_trip_is_between_offers_while_pending_offered_to_no_one_for_drivers_who_did_not_decline_it():
    assert lifecycle.between_offers(trip(PENDING), DRIVER)
    assert not lifecycle.between_offers(trip(PENDING, declined=(DRIVER,)), DRIVER)
    assert not lifecycle.between_offers(trip(PENDING, offered_to=OTHER), DRIVER)
    assert not any(lifecycle.between_offers(trip(s), DRIVER) for s in STATUSES if s != PENDING)


def test_a_trip_is_read_by_its_rider_and_its_driver_only():
    assert lifecycle.may_read(trip(ACCEPTED), RIDER) and lifecycle.may_read(trip(ACCEPTED), DRIVER)
    assert not lifecycle.may_read(trip(ACCEPTED), OTHER)
    assert not lifecycle.may_read(trip(PENDING, offered_to=OTHER), OTHER)


def test_a_trip_is_current_for_its_rider_driver_or_the_driver_it_is_offered_to_until_it_ends():
    for user in (RIDER, DRIVER):
        assert [s for s in STATUSES if lifecycle.is_current_for(trip(s), user)] == (
            [PENDING, ACCEPTED, ARRIVED, IN_PROGRESS] if user == RIDER else [ACCEPTED, ARRIVED, IN_PROGRESS])
    assert lifecycle.is_current_for(trip(PENDING, offered_to=OTHER), OTHER)
    assert not lifecycle.is_current_for(trip(PENDING, declined=(OTHER,)), OTHER)
