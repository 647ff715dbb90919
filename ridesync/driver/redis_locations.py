"""The trips under way, their fixes and push claims in Redis (REDIS_URL),
shared by every DriverService replica: the same methods as
locations.TripsUnderWay. Keys, under the pool's prefix:
- `live:<trip>`: a hash, the TripUnderWay (JSON) and how far along it is,
  replaced only by a later status; an ended trip stays ENDED_TTL as ended;
- `fix:<trip>`, `basis:<trip>`, `pushed:<trip>`: its last fix, the route
  its ETA is taken from, and the last frame pushed (with its fix's time);
- `claim:<trip>`: who pushes it now, or pushed it last, until when;
- `locations:due`: trips whose newest fix waits to be pushed, by when.
Each expires (LOCATION_KEPT_TTL after its last write), so a dead replica's trips lapse."""
import json
import uuid

from ridesync.driver.redis_pool import connect, reply_kept, reply_key
from ridesync.ride import tracking
from ridesync.ride.tracking import EtaBasis, Fix, TripUnderWay
from ridesync.settings import process_settings


# KEYS: live hash; ARGV: trip JSON or '', progress, ttl s. A later status replaces the one known. -> 1 replaced
FOLLOW = """
local known = tonumber(redis.call('HGET', KEYS[1], 'progress') or '-1')
if tonumber(ARGV[2]) <= known then return 0 end
redis.call('HSET', KEYS[1], 'trip', ARGV[1], 'progress', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: live hash, fix, due set; ARGV: fix JSON, ttl s, trip id, due at. A followed trip's fix, its push due.
RECORD_FIX = """
local trip = redis.call('HGET', KEYS[1], 'trip')
if not trip or trip == '' then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[3], 'LT', ARGV[4], ARGV[3])
return 1
"""

# A claim is "<token> <until>", until on the pushers' wall clock (as offers' deadlines are).
# A claim held under this token is this claim sent again (its reply lost, redis_pool's retry): claimed.
# KEYS: claim; ARGV: token, now, until, ttl s. -> '' claimed, else when it may be claimed
CLAIM = """
local held = redis.call('GET', KEYS[1])
if held then
  local token, free_at = string.match(held, '^(%S+) (.+)$')
  if token ~= ARGV[1] and tonumber(free_at) > tonumber(ARGV[2]) then return free_at end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[3], 'EX', ARGV[4])
return ''
"""

# KEYS: claim; ARGV: token, until, ttl s. The claim shortened once its push is out.
SETTLE = """
local held = redis.call('GET', KEYS[1])
if not held or string.match(held, '^(%S+) ') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'EX', ARGV[3])
return 1
"""

# KEYS: due set, reply; ARGV: now. -> the trips due by now, taken off the set
DUE = reply_kept("""
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
""")


class RedisTripsUnderWay:
    def __init__(self, url, prefix="ridesync:"):
        self._redis = connect(url)
        self._p = prefix
        settings = process_settings()
        self._kept_ttl, self._busy_ttl = settings.location_kept_ttl, settings.busy_ttl
        self._ended_ttl = settings.ended_ttl
        self._follow = self._redis.register_script(FOLLOW)
        self._record_fix = self._redis.register_script(RECORD_FIX)
        self._claim = self._redis.register_script(CLAIM)
        self._settle = self._redis.register_script(SETTLE)
        self._due = self._redis.register_script(DUE)

    def follow(self, trip):
        return self._follow(keys=[f"{self._p}live:{trip.id}"],
                            args=[json.dumps(trip.to_json()), tracking.progress(trip.status), self._busy_ttl]) == 1

    def end(self, trip_id):
        """True when the trip was followed until now."""
        followed = bool(self._redis.hget(f"{self._p}live:{trip_id}", "trip"))
        self._follow(keys=[f"{self._p}live:{trip_id}"], args=["", tracking.progress("completed"), self._ended_ttl])
        self._redis.delete(*(f"{self._p}{kind}:{trip_id}" for kind in ("fix", "basis", "pushed", "claim")))
        self._redis.zrem(f"{self._p}locations:due", trip_id)
        return followed

    def trip(self, trip_id):
        text = self._redis.hget(f"{self._p}live:{trip_id}", "trip")
        return TripUnderWay.from_json(json.loads(text)) if text else None

    def last_fix(self, trip_id):
        return self._read("fix", trip_id, Fix.from_json)

    def record_fix(self, trip_id, fix):
        self._record_fix(keys=[f"{self._p}live:{trip_id}", f"{self._p}fix:{trip_id}", f"{self._p}locations:due"],
                         args=[json.dumps(fix.to_json()), self._kept_ttl, trip_id, repr(fix.at)])

    def basis(self, trip_id):
        return self._read("basis", trip_id, EtaBasis.from_json)

    def record_basis(self, trip_id, basis):
        self._write("basis", trip_id, basis.to_json())

    def pushed(self, trip_id):
        return self._read("pushed", trip_id, lambda pushed: pushed["frame"])

    def pushed_at(self, trip_id):
        return self._read("pushed", trip_id, lambda pushed: pushed["at"]) or float("-inf")

    def record_push(self, trip_id, at, frame):
        self._write("pushed", trip_id, {"at": at, "frame": frame})

    def claim(self, trip_id, now, hold):
        token = uuid.uuid4().hex
        free_at = self._claim(keys=[f"{self._p}claim:{trip_id}"],
                              args=[token, repr(now), repr(now + hold), self._kept_ttl])
        return (token, None) if free_at == "" else (None, float(free_at))

    def settle(self, trip_id, token, until):
        self._settle(keys=[f"{self._p}claim:{trip_id}"], args=[token, repr(until), self._kept_ttl])

    def defer(self, trip_id, at):
        self._redis.zadd(f"{self._p}locations:due", {trip_id: at}, lt=True)

    def due(self, now):
        return self._due(keys=[f"{self._p}locations:due", reply_key(self._p)], args=[now])

    def _read(self, kind, trip_id, make):
        text = self._redis.get(f"{self._p}{kind}:{trip_id}")
        return make(json.loads(text)) if text else None

    def _write(self, kind, trip_id, data):
        self._redis.set(f"{self._p}{kind}:{trip_id}", json.dumps(data), ex=self._kept_ttl)

    def close(self):
        self._redis.close()
