"""DriverService: the pool of available drivers, and dispatch of trip requests."""
