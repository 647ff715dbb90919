"""One log format for every process: time, level, process, what happened."""
import logging
import os


def configure(process):
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s %(levelname)s {process}[%(process)d] %(name)s: %(message)s",
    )
    logging.getLogger("pika").setLevel(logging.WARNING)
