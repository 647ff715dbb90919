"""The pool of drivers in Redis (REDIS_URL), shared by every DriverService
replica: the same methods as DriverPool (pool.py says what each promises).

Keys, under a prefix (REDIS_KEY_PREFIX):
- `drivers:<package>`: a GEO index of the package's registered drivers, so
  the nearest search is the server's (GEOSEARCH ... BYRADIUS ... ASC COUNT);
- `driver:<id>`: a hash, the Driver (JSON), its package and its session;
- `offer:<id>`: the Offer the driver has not answered, expiring a while
  after its deadline, so that an offer a dead replica made lapses;
  `offers:due` orders them by deadline; `trip_offers:<trip>` who was asked;
- `busy:<id>`: the trip the driver is on, expiring after BUSY_TTL at most;
- `ended:<trip>`: the trip ended (for ENDED_TTL), so that a registration
  naming it, read from TripService just before, makes no one busy;
- `handled:<queue>:<message id>`: a message some replica handled (for
  HANDLED_TTL), so that a copy of it is dropped on every replica.
- `reply:<token>`: what a script that takes what it returns answered
  (for KEPT_REPLY_MS), so that the same call sent again answers the same.
Every change that reads before it writes is one Lua script, so two
dispatchers never claim one driver for two trips."""
import dataclasses
import json
import logging
import time
import uuid

import redis
import redis.backoff
import redis.retry

from ridesync.driver.dispatch import Offer, TripToDispatch
from ridesync.driver.pool import Driver, DriverNotFound, new_driver
from ridesync.ride.fares import PACKAGES
from ridesync.rabbit import Retry
from ridesync.ride.model import Coordinate
from ridesync.settings import process_settings

log = logging.getLogger(__name__)
SEARCH_RADII_KM = (2, 8, 32, 128)  # the search widens until enough free drivers are found
SEARCH_WANTS = (8, 64, 1_000_000)  # free drivers asked for at a time, while the ones before were all claimed
RESTART_RETRIES = 5  # a command refused while Redis restarts is sent again, 50 ms to 1 s apart (about 2.5 s in all)
UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)  # Redis down, or not answering
KEPT_REPLY_MS = 60_000  # a taking script's reply is kept this long for the same call sent again


def reply_kept(script):
    """A script that takes (deletes) what it returns, its reply kept under
    its last KEY: sent again by the retry after its reply was lost (a restart
    between the two), it answers what the first run took, not nothing."""
    return f"""
local kept = redis.call('GET', KEYS[#KEYS])
if kept then return cjson.decode(kept) end
local reply = (function()
{script}
end)()
if reply and #reply > 0 then redis.call('SET', KEYS[#KEYS], cjson.encode(reply), 'PX', {KEPT_REPLY_MS}) end
return reply
"""


def reply_key(prefix):
    """Where a taking script keeps its reply to one call (reply_kept)."""
    return f"{prefix}reply:{uuid.uuid4().hex}"


# KEYS: driver hash, reply; ARGV: session. -> {driver JSON, offer JSON or false} or nil
UNREGISTER = reply_kept("""
if redis.call('HGET', KEYS[1], 'session') ~= ARGV[1] then return nil end
local driver = redis.call('HGET', KEYS[1], 'driver')
local package = redis.call('HGET', KEYS[1], 'package')
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('DEL', KEYS[1])
redis.call('ZREM', ARGV[2] .. 'drivers:' .. package, id)
local offer = redis.call('GET', ARGV[2] .. 'offer:' .. id)
redis.call('DEL', ARGV[2] .. 'offer:' .. id)
redis.call('ZREM', ARGV[2] .. 'offers:due', id)
return {driver, offer}
""")

# ARGV: prefix, driver id, trip id, offer JSON, deadline, key ttl ms. -> 1 claimed, 0 not
ASK = """
local p, id, trip = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', p .. 'driver:' .. id) == 0 then return 0 end
if redis.call('EXISTS', p .. 'busy:' .. id) == 1 then return 0 end
local standing = redis.call('GET', p .. 'offer:' .. id)
if standing and cjson.decode(standing)['trip']['id'] ~= trip then return 0 end
redis.call('SET', p .. 'offer:' .. id, ARGV[4], 'PX', ARGV[6])
redis.call('ZADD', p .. 'offers:due', ARGV[5], id)
redis.call('SADD', p .. 'trip_offers:' .. trip, id)
redis.call('PEXPIRE', p .. 'trip_offers:' .. trip, ARGV[6])
return 1
"""

# KEYS: reply; ARGV: prefix, trip id, driver id or '', busy ttl s, 'assign'|'release'|'let_go', ended ttl s.
# -> ids of the drivers whose offer of the trip was void
OFFERS_OF_TRIP = reply_kept("""
local p, trip, driver, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local asked = mode == 'let_go' and {driver} or redis.call('SMEMBERS', p .. 'trip_offers:' .. trip)
local voided = {}
for _, id in ipairs(asked) do
  local standing = redis.call('GET', p .. 'offer:' .. id)
  if standing and cjson.decode(standing)['trip']['id'] == trip then
    redis.call('DEL', p .. 'offer:' .. id)
    redis.call('ZREM', p .. 'offers:due', id)
    table.insert(voided, id)
  end
  redis.call('SREM', p .. 'trip_offers:' .. trip, id)
end
if mode == 'assign' then
  redis.call('SET', p .. 'busy:' .. driver, trip, 'EX', ARGV[4])
elseif mode == 'release' then
  if driver ~= '' and redis.call('GET', p .. 'busy:' .. driver) == trip then
    redis.call('DEL', p .. 'busy:' .. driver)
  end
  redis.call('SET', p .. 'ended:' .. trip, '1', 'EX', ARGV[6])
end
return voided
""")

# KEYS: driver hash; ARGV: prefix, driver id, driver JSON, package, session, longitude, latitude,
# trip id or '', busy ttl s. The driver in the package's index and no other's; on the trip, unless it has ended.
REGISTER = """
local p, id, package, trip = ARGV[1], ARGV[2], ARGV[4], ARGV[8]
local before = redis.call('HGET', KEYS[1], 'package')
if before and before ~= package then redis.call('ZREM', p .. 'drivers:' .. before, id) end
redis.call('HSET', KEYS[1], 'id', id, 'driver', ARGV[3], 'package', package, 'session', ARGV[5])
redis.call('GEOADD', p .. 'drivers:' .. package, ARGV[6], ARGV[7], id)
if trip ~= '' and redis.call('EXISTS', p .. 'ended:' .. trip) == 0 then
  redis.call('SET', p .. 'busy:' .. id, trip, 'EX', ARGV[9])
end
"""

# KEYS: reply; ARGV: prefix, now. -> offer JSONs past their deadline, each withdrawn
EXPIRED = reply_kept("""
local p = ARGV[1]
local due = redis.call('ZRANGEBYSCORE', p .. 'offers:due', '-inf', ARGV[2])
local expired = {}
for _, id in ipairs(due) do
  redis.call('ZREM', p .. 'offers:due', id)
  local offer = redis.call('GET', p .. 'offer:' .. id)
  if offer then
    redis.call('DEL', p .. 'offer:' .. id)
    table.insert(expired, id)
    table.insert(expired, offer)
  end
end
return expired
""")

# ARGV: prefix, package, longitude, latitude, trip id, how many, radii (comma-separated), declined ids...
# -> the Driver JSONs of up to that many free drivers who did not decline the trip, nearest first
NEAREST_FREE = """
local p, trip, want = ARGV[1], ARGV[5], tonumber(ARGV[6])
local declined, found, seen = {}, {}, {}
for i = 8, #ARGV do declined[ARGV[i]] = true end
for radius in string.gmatch(ARGV[7], '[^,]+') do
  local ids = redis.call('GEOSEARCH', p .. 'drivers:' .. ARGV[2], 'FROMLONLAT', ARGV[3], ARGV[4],
                         'BYRADIUS', radius, 'km', 'ASC')
  for _, id in ipairs(ids) do
    if not seen[id] then
      seen[id] = true
      if not declined[id] and redis.call('EXISTS', p .. 'busy:' .. id) == 0 then
        local offer = redis.call('GET', p .. 'offer:' .. id)
        if not offer or cjson.decode(offer)['trip']['id'] == trip then
          table.insert(found, redis.call('HGET', p .. 'driver:' .. id, 'driver'))
          if #found >= want then return found end
        end
      end
    end
  end
end
return found
"""

# KEYS: driver hash; ARGV: prefix, driver JSON, longitude, latitude. -> package or nil
MOVE = """
local package = redis.call('HGET', KEYS[1], 'package')
if not package then return nil end
redis.call('HSET', KEYS[1], 'driver', ARGV[2])
redis.call('GEOADD', ARGV[1] .. 'drivers:' .. package, ARGV[3], ARGV[4], redis.call('HGET', KEYS[1], 'id'))
return package
"""


def connect(url):
    """A client of the Redis at url, every command bounded by REDIS_TIMEOUT."""
    timeout = process_settings().redis_timeout
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                decode_responses=True, health_check_interval=30, retry=_restart_retry())


class RedisDriverPool:
    def __init__(self, url, prefix="ridesync:"):
        self._redis = connect(url)
        self._p = prefix
        self._register = self._redis.register_script(REGISTER)
        self._unregister = self._redis.register_script(UNREGISTER)
        self._ask = self._redis.register_script(ASK)
        self._offers_of_trip = self._redis.register_script(OFFERS_OF_TRIP)
        self._expired = self._redis.register_script(EXPIRED)
        self._move = self._redis.register_script(MOVE)
        self._nearest_free = self._redis.register_script(NEAREST_FREE)

    def handle_once(self, queue, message_id, work):
        """As Database.handle_once, for the work queues of DriverService:
        False, without running work(), when some replica handled a message
        of this id from this queue. Marked once work() returned, so a
        replica that dies in the middle leaves the message to its
        redelivery; two copies handled at the very same moment may both run."""
        key = f"{self._p}handled:{queue}:{message_id}"
        try:
            if self._redis.exists(key):
                return False
        except UNREACHABLE as exc:
            raise Retry(f"Redis: {exc}") from exc
        work()
        try:
            self._redis.set(key, 1, ex=process_settings().handled_ttl)
        except UNREACHABLE as exc:  # handled: only a copy, if one comes, would be handled again
            log.warning("message %s of %s handled but not marked in Redis: %s", message_id, queue, exc)
        return True

    def register(self, driver_id, package_slug, session="", trip_id=None):
        driver = new_driver(driver_id, package_slug)
        self._register(keys=[f"{self._p}driver:{driver_id}"], args=[
            self._p, driver_id, _driver_json(driver), package_slug, session, driver.location.longitude,
            driver.location.latitude, trip_id or "", process_settings().busy_ttl])
        return driver

    def unregister(self, driver_id, session=""):
        gone = self._unregister(keys=[f"{self._p}driver:{driver_id}", reply_key(self._p)], args=[session, self._p])
        if gone is None:
            return None, None
        driver, offer = gone
        return _driver_of(driver), (_offer_of(driver_id, offer) if offer else None)

    def ask(self, driver_id, offer):
        ttl_ms = max(1, int((offer.expires_at - time.time()) * 1000)) + process_settings().offer_grace * 1000
        return self._ask(args=[self._p, driver_id, offer.trip.id, _offer_json(offer), offer.expires_at, ttl_ms]) == 1

    def let_go(self, driver_id, trip_id):
        self._offers_of(trip_id, driver_id, "let_go")

    def assign(self, driver_id, trip_id):
        return [d for d in self._offers_of(trip_id, driver_id, "assign") if d != driver_id]

    def release(self, driver_id, trip_id):
        self._offers_of(trip_id, driver_id or "", "release")

    def _offers_of(self, trip_id, driver_id, mode):
        settings = process_settings()
        return self._offers_of_trip(keys=[reply_key(self._p)],
                                    args=[self._p, trip_id, driver_id, settings.busy_ttl, mode, settings.ended_ttl])

    def expired_offers(self, now):
        flat = self._expired(keys=[reply_key(self._p)], args=[self._p, now])
        return [(flat[i], _offer_of(flat[i], flat[i + 1])) for i in range(0, len(flat), 2)]

    def move(self, driver_id, location):
        key = f"{self._p}driver:{driver_id}"
        current = self._redis.hget(key, "driver")
        if current is None:
            raise DriverNotFound(f"driver {driver_id!r} is not registered")
        moved = dataclasses.replace(_driver_of(current), location=location)
        if self._move(keys=[key], args=[self._p, _driver_json(moved), location.longitude, location.latitude]) is None:
            raise DriverNotFound(f"driver {driver_id!r} is not registered")
        return moved

    def on_trip(self, driver_id):
        return self._redis.get(f"{self._p}busy:{driver_id}")

    def registered(self, driver_ids):
        driver_ids = list(driver_ids)
        with self._redis.pipeline(transaction=False) as pipe:
            for driver_id in driver_ids:
                pipe.exists(f"{self._p}driver:{driver_id}")
            return {d for d, there in zip(driver_ids, pipe.execute()) if there}

    def drivers(self):
        with self._redis.pipeline(transaction=False) as pipe:
            for package in PACKAGES:
                pipe.zrange(f"{self._p}drivers:{package}", 0, -1)
            ids = [i for found in pipe.execute() for i in found]
        return [d for d in self._load(ids) if d is not None]

    def free_drivers(self, trip_id):
        return [d for d, busy, offer in self._with_state(d.id for d in self.drivers())
                if _free_for(busy, offer, trip_id)]

    def candidates(self, trip):
        """Nearest first: the package's GEO index searched, and who is free
        checked, by the server in one script; a few at a time, since the
        first is nearly always free to claim."""
        given = set()
        for want in SEARCH_WANTS:
            found = self._nearest_free(args=[
                self._p, trip.package_slug, trip.pickup.longitude, trip.pickup.latitude, trip.id, want,
                ",".join(map(str, SEARCH_RADII_KM)), *trip.declined])
            for driver in map(_driver_of, found):
                if driver.id not in given:
                    given.add(driver.id)
                    yield driver
            if len(found) < want:
                return

    def _load(self, ids):
        with self._redis.pipeline(transaction=False) as pipe:
            for driver_id in ids:
                pipe.hget(f"{self._p}driver:{driver_id}", "driver")
            return [None if d is None else _driver_of(d) for d in pipe.execute()]

    def _with_state(self, ids):
        ids = list(ids)
        with self._redis.pipeline(transaction=False) as pipe:
            for driver_id in ids:
                pipe.hget(f"{self._p}driver:{driver_id}", "driver")
                pipe.get(f"{self._p}busy:{driver_id}")
                pipe.get(f"{self._p}offer:{driver_id}")
            found = pipe.execute()
        return [(_driver_of(found[i]), found[i + 1], found[i + 2])
                for i in range(0, len(found), 3) if found[i] is not None]

    def close(self):
        self._redis.close()


def _restart_retry():
    """A connection the server closed is replaced when it is taken from the
    pool (redis-py); a command refused while Redis restarts is sent again.
    Not after a timeout: a Redis that hangs is not restarting."""
    return redis.retry.Retry(redis.backoff.ExponentialWithJitterBackoff(base=0.05, cap=1.0), RESTART_RETRIES,
                             supported_errors=(redis.exceptions.ConnectionError,))


def _free_for(busy, offer, trip_id):
    return busy is None and (offer is None or json.loads(offer)["trip"]["id"] == trip_id)


def _driver_json(driver):
    return json.dumps(dataclasses.asdict(driver))


def _driver_of(text):
    return _driver_from(json.loads(text))


def _driver_from(data):
    return Driver(**{**data, "location": Coordinate(**data["location"])})


def _offer_json(offer):
    return json.dumps(dataclasses.asdict(offer))


def _offer_of(driver_id, text):
    data = json.loads(text)
    trip = data["trip"]
    trip = TripToDispatch(**{**trip, "pickup": Coordinate(**trip["pickup"]), "declined": tuple(trip["declined"])})
    # An offer a DriverService wrote before offers named their driver (a
    # rolling deploy): the profile, made up from the id, is the same.
    driver = _driver_from(data["driver"]) if "driver" in data else new_driver(driver_id, trip.package_slug)
    return Offer(trip, data["expires_at"], driver)
