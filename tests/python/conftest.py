"""Shared fixtures: a fresh ZeroMQ context per test, a time limit on every test, and no
publisher left open after one."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Iterator

import pytest
import zmq

from ndbridge import lifetime

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


@pytest.fixture(autouse=True)
def no_open_publishers() -> Iterator[None]:
    """Drops the publishers a test left open (a failed one, typically), so that the exit hook
    does not wait for their records when pytest ends; fails the test that left them."""
    before = set(map(id, lifetime.open_publishers()))
    yield
    left = [p for p in lifetime.open_publishers() if id(p) not in before]
    for pub in left:
        pub._abandon()
    assert not left, f"publishers left open: {left}"


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    """A ZeroMQ context of the test's own, destroyed (sockets closed, no linger) afterwards."""
    context = zmq.Context()
    yield context
    context.destroy(linger=0)
