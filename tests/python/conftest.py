"""Shared fixtures: a fresh ZeroMQ context per test and a time limit on every test."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Iterator

import pytest
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: No test may take longer than this, so a socket mistake fails instead of hanging.
TEST_TIMEOUT_S = 60


@pytest.fixture(autouse=True)
def time_limit(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the running test after TEST_TIMEOUT_S seconds (where SIGALRM exists)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"{request.node.nodeid} took longer than {TEST_TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    """A ZeroMQ context of the test's own, destroyed (sockets closed, no linger) afterwards."""
    context = zmq.Context()
    yield context
    context.destroy(linger=0)
