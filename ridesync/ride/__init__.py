"""The ride's own domain, shared by every process: coordinates and
distances, car packages and fares, routes, fares and trips. Plain Python, no I/O."""
