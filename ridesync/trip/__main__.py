from ridesync.trip.server import main

main()
