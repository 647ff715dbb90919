"""A trip's lifecycle: which step may happen in which status, and by whom.

    pending --accept--> accepted --arrived--> arrived --started--> in_progress --completed--> completed
       |                   |                     |
       +-- no driver left: no_drivers_found      +-- cancel (rider or driver) --> cancelled
       +-- cancel (rider) ------------------------------------------------------> cancelled

Each rule takes the Trip as it is and who asks, and answers with the status
the trip moves to, or None when the step already happened (a repeat changes
nothing). A step that does not fit the status raises StepRefused; one asked
by someone the trip does not allow raises NotYours. Plain Python, no I/O."""

PENDING = "pending"
ACCEPTED = "accepted"
ARRIVED = "arrived"
IN_PROGRESS = "in_progress"
COMPLETED = "completed"
CANCELLED = "cancelled"
NO_DRIVERS_FOUND = "no_drivers_found"

ON_TRIP = (ACCEPTED, ARRIVED, IN_PROGRESS)  # its driver is busy with it: from the accept until it ends
ACTIVE = (PENDING, *ON_TRIP)
RIDE = (ACCEPTED, ARRIVED, IN_PROGRESS, COMPLETED)  # a driver's steps, in order

# A driver's step on the way -> (the status it needs, the status it gives).
DRIVER_STEPS = {
    "arrived": (ACCEPTED, ARRIVED),
    "started": (ARRIVED, IN_PROGRESS),
    "completed": (IN_PROGRESS, COMPLETED),
}
CANCELLABLE = {"rider": (PENDING, ACCEPTED, ARRIVED), "driver": (ACCEPTED, ARRIVED)}
MAX_REASON = 500  # characters of a cancellation's reason, whoever cancels


class StepRefused(Exception):
    """The step does not fit the trip's status; nothing changed."""

    code = "failed_precondition"


class NotYours(Exception):
    """The step is not this user's to take on this trip; nothing changed."""

    code = "permission_denied"


def accept(trip, driver_id):
    """Only the driver the trip is offered to may take it."""
    if trip.driver_id == driver_id:
        return None
    _answerable(trip, driver_id, "accepted")
    return ACCEPTED


def decline(trip, driver_id):
    """Only the driver the trip is offered to may decline it, once. The
    trip stays pending, for the next driver."""
    if driver_id in trip.declined:
        return None
    _answerable(trip, driver_id, "declined")
    return PENDING


def offer(trip, driver_id):
    """Dispatch asked this driver; only a pending trip can be offered."""
    if trip.offered_to == driver_id and trip.status == PENDING:
        return None
    _require(trip, PENDING, f"offered to driver {driver_id}")
    return PENDING


def driver_step(trip, driver_id, step):
    """arrived, started or completed: only by the trip's driver, in order."""
    if step not in DRIVER_STEPS:
        raise StepRefused(f"{step!r} is not a step of a trip; steps are {', '.join(DRIVER_STEPS)}")
    if trip.driver_id != driver_id:
        raise NotYours(f"trip {trip.id} is not driven by {driver_id}")
    needed, reached = DRIVER_STEPS[step]
    if trip.status in RIDE and RIDE.index(trip.status) >= RIDE.index(reached):
        return None
    _require(trip, needed, step)
    return reached


def cancel(trip, by, user_id):
    """by "rider" (the trip's rider: until the ride starts) or "driver" (its
    driver: after accepting it, until the ride starts)."""
    party = trip.user_id if by == "rider" else trip.driver_id
    if party != user_id:
        raise NotYours(f"trip {trip.id} is not {user_id}'s to cancel")
    if trip.status == CANCELLED:
        return None
    _require(trip, CANCELLABLE[by], f"cancelled by its {by}")
    return CANCELLED


def no_drivers_found(trip):
    """Dispatch has no one left to ask: the trip ends unserved."""
    if trip.status == NO_DRIVERS_FOUND:
        return None
    _require(trip, PENDING, "left without drivers")
    return NO_DRIVERS_FOUND


def between_offers(trip, driver_id):
    """Whether dispatch may be about to offer the trip to this driver: it is
    pending, offered to no one, and they have not declined it."""
    return trip.status == PENDING and trip.offered_to is None and driver_id not in trip.declined


def may_read(trip, user_id):
    return user_id in (trip.user_id, trip.driver_id)


def is_current_for(trip, user_id):
    """Whether this is the trip the user is busy with now: not ended, and
    theirs to ride, to drive, or to answer (offered to them)."""
    return trip.status in ACTIVE and user_id in (trip.user_id, trip.driver_id, trip.offered_to)


def _answerable(trip, driver_id, what):
    if trip.offered_to != driver_id:
        raise NotYours(f"trip {trip.id} is not offered to driver {driver_id}")
    _require(trip, PENDING, what)


def _require(trip, statuses, what):
    allowed = (statuses,) if isinstance(statuses, str) else statuses
    if trip.status not in allowed:
        raise StepRefused(f"trip {trip.id} is {trip.status}: it cannot be {what}")
