"""The live side of a gateway worker: phones' WebSockets and the
notifications they get. Read hub.py first: it follows a notification from
the broker to the socket.

- routes.py: /ws/riders, /ws/drivers and /live/stats, the HTTP edge.
- hub.py: this worker's sockets (the only registry of them) and the path
  of a notification to them; drained on SIGTERM.
- feed.py: the broker side: this worker's own queue (its users'
  notifications), the registry of every socket's comings and goings, and
  catch-ups from the record of notifications.
- ledger.py: who gets which notification, and who holds which user, as
  plain decisions (no I/O).
- connection.py: one socket, and its one writer.
- drivers.py: what a driver's socket does beyond a rider's."""
