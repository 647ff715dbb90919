"""The benchmarks' one percentile (bench/support.py): nearest rank."""
import math

from bench.support import percentile


def test_the_percentile_is_the_nearest_rank_whatever_the_order():
    assert percentile([4, 1, 3, 2], 50) == 2
    assert percentile(range(1, 101), 99) == 99
    assert percentile(range(1, 101), 100) == 100
    assert percentile([7], 1) == 7
    assert math.isnan(percentile([], 50))
