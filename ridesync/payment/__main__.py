import logging

from ridesync import grpc_server, logs

logs.configure("payment")
logging.getLogger(__name__).info("payment service up; stopping on %s", grpc_server.wait_for_stop_signal())
