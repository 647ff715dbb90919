"""The benchmarks' one percentile (bench/support.py): nearest rank; and
bench.state's steps, taking turns."""
import math
import re

from bench.state import START, alternated, figures, ride, seconds_of
from bench.support import percentile


def test_the_percentile_is_the_nearest_rank_whatever_the_order():
    assert percentile([4, 1, 3, 2], 50) == 2
    assert percentile(range(1, 101), 99) == 99
    assert percentile(range(1, 101), 100) == 100
    assert percentile([7], 1) == 7
    assert math.isnan(percentile([], 50))


def test_a_ride_and_a_single_call_take_turns_abba_and_each_gives_its_seconds():
    done = []
    steps = {"ride": ride(lambda: done.append("preview") or "fare", lambda fare: done.append(f"start on {fare}")),
             "call": seconds_of(lambda: done.append("call"))}
    samples = alternated(steps, calls=3, rounds=2)
    a_ride = ["preview", "start on fare"]
    assert done == 3 * [*a_ride, "call", "call", *a_ride]  # the turns go on reversing across rounds
    assert [len(round_) for round_ in samples["ride"]] == [len(round_) for round_ in samples["call"]] == [3, 3]
    assert all(seconds.preview >= 0 and seconds.start >= 0 for round_ in samples["ride"] for seconds in round_)
    assert all(seconds >= 0 for round_ in samples["call"] for seconds in round_)
    for shown in figures(samples, "ride", START), figures(samples, "call"):
        assert re.fullmatch(r"p50 +\d+\.\d\d ms p99 +\d+\.\d\d ms", shown)
