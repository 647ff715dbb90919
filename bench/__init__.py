"""Benchmarks of the gateway's live side (issue 3, "Benchmarks"):
`python -m bench.capacity`, `python -m bench.fanout`, or both with modest
defaults through `python -m bench` (`make bench`). Results: bench/RESULTS.md."""
