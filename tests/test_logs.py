"""Log lines (ridesync/logs.py): one record is one line, whatever it carries."""
import io
import logging
import sys

import pytest

from ridesync import logs


@pytest.fixture
def output(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    root, pika = logging.getLogger(), logging.getLogger("pika")
    before = root.handlers[:], root.level, pika.level
    logs.configure("test")
    yield out
    root.handlers[:], root.level, pika.level = before


def test_a_failure_with_its_traceback_and_a_forged_line_is_one_line(output):
    try:
        raise ValueError("bad\nINFO forged")
    except ValueError:
        with logs.bound(user="r1"):
            logging.getLogger("ridesync.test").exception("frame for %s failed", "r1\nINFO forged too")
    lines = output.getvalue().splitlines()
    assert len(lines) == 1
    assert "frame for r1\\nINFO forged too failed [user=r1]" in lines[0]
    assert "Traceback" in lines[0] and "ValueError: bad\\nINFO forged" in lines[0]
