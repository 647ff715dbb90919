"""How often one user may ask for work that costs the services: previews
and starts share a token bucket per user and gateway worker (PREVIEW_RATE a
second, bursts of PREVIEW_BURST). Plain logic; the clock is passed in.
Limits per client address belong to the load balancer in front."""
import time
from collections import OrderedDict


class TokenBuckets:
    def __init__(self, rate, burst, clock=time.monotonic):
        self._rate, self._burst, self._clock = rate, burst, clock
        self._buckets = OrderedDict()  # user id -> (tokens, when counted), least recently used first

    def take(self, user_id):
        """0 when user_id may go ahead (a token is taken), else the seconds until they may."""
        now = self._clock()
        self._forget_full(now)
        tokens, counted = self._buckets.pop(user_id, (self._burst, now))
        tokens = min(self._burst, tokens + (now - counted) * self._rate)
        if tokens >= 1:
            self._buckets[user_id] = (tokens - 1, now)
            return 0.0
        self._buckets[user_id] = (tokens, now)
        return (1 - tokens) / self._rate

    def __len__(self):
        return len(self._buckets)

    def _forget_full(self, now):
        # A bucket full again is the same as none: memory follows the users
        # active in the last burst/rate seconds, not every user ever seen.
        refill = self._burst / self._rate
        while self._buckets:
            user_id, (_tokens, counted) = next(iter(self._buckets.items()))
            if now - counted < refill:
                return
            del self._buckets[user_id]
