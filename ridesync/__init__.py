"""RideSync: a ride-hailing backend (API gateway, trip, driver and payment services)."""
