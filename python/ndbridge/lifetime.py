"""The end of a process: every :class:`~ndbridge.Publisher` still open is flushed and closed
before the process exits, so a script that ends without closing loses nothing.

Two hooks run :func:`close_all`:

- In every process, an ``atexit`` handler: it runs when a script ends, also through an uncaught
  exception or ``sys.exit``. It is registered after pyzmq's own exit handler (which releases the
  Python buffers that zero-copy frames point into), and ``atexit`` runs handlers in reverse order,
  so the records are out and ZeroMQ's threads are stopped before those buffers are released.
- In a ``multiprocessing`` child, a ``multiprocessing.util.Finalize`` with an exit priority.
  Such a child ends with ``os._exit``, which skips ``atexit``; before that, its bootstrap
  (``BaseProcess._bootstrap``, with the fork, spawn and forkserver methods alike) calls
  ``multiprocessing.util._exit_function``, which runs the finalizers that have an exit priority.
  The finalizer is registered in the child itself, when its first publisher opens (a fork
  child starts with the parent's finalizers cleared).

Each publisher gets its own timeout (``Publisher(timeout=...)``), counted from the start of the
hook. If records did not go out in time, or the wait is interrupted, they are dropped, the hook
says so on stderr and the process exits with status 1: never 0 with records lost. In the main
process that exit is ``os._exit(1)`` after stdout, stderr and ``logging`` are flushed (the exit
handlers that would have run after this one do not run); in a ``multiprocessing`` child, the
finalizer raises ``SystemExit(1)``, which the bootstrap turns into the exit code (unless the
child is already exiting with an exception of its own, which keeps its code).

A fork copies the parent's open publishers into the child; their sockets belong to the parent,
so the child forgets them at once and closes only the publishers it opens itself. Nothing runs
for a process killed by a signal or ended with ``os._exit`` by its own code.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Dict, List, Optional

# pyzmq registers its exit handler when this module is first imported. Importing it before
# registering ours makes ours run first (atexit runs handlers last-in, first-out).
import zmq.utils.garbage  # noqa: F401

if TYPE_CHECKING:
    from .net import Publisher

__all__ = ["open_publishers", "close_all"]

# Open publishers of this process, by id. Strong references: a publisher that is dropped
# without being closed still gets its records out at exit.
_open: Dict[int, "Publisher"] = {}
_lock = threading.Lock()
# The process whose multiprocessing finalizer is registered, if any.
_finalizer_pid: Optional[int] = None

#: Exit priority of the multiprocessing finalizer: below the library's own finalizers (the
#: lowest, -100, removes the temporary directory), so they all run before it, also when it
#: raises ``SystemExit``.
FINALIZER_PRIORITY = -1000


def track(pub: "Publisher") -> None:
    """Registers an open publisher, to be closed at exit if it is still open then."""
    global _finalizer_pid
    with _lock:
        _open[id(pub)] = pub
        if _finalizer_pid == os.getpid():
            return
        mp = sys.modules.get("multiprocessing")
        if mp is None or mp.parent_process() is None:
            return  # not a multiprocessing child: atexit covers it
        from multiprocessing import util

        util.Finalize(None, _at_child_exit, exitpriority=FINALIZER_PRIORITY)
        _finalizer_pid = os.getpid()


def forget(pub: "Publisher") -> None:
    """Unregisters a publisher that has been closed."""
    with _lock:
        _open.pop(id(pub), None)


def open_publishers() -> List["Publisher"]:
    """The publishers of this process that are open, oldest first."""
    with _lock:
        return list(_open.values())


def close_all() -> List[BaseException]:
    """Closes every open publisher of this process, each with its own timeout counted from now.

    Returns the failures: a :class:`~ndbridge.DeliveryError` for each publisher whose records
    did not all go out (they are dropped), or the exception that interrupted the wait (then
    every publisher not closed yet is closed at once, its records dropped).
    """
    start = time.monotonic()
    failures: List[BaseException] = []
    for pub in open_publishers():
        try:
            pub._close_from(start)
        except Exception as e:  # DeliveryError, or a ZeroMQ error
            failures.append(e)
        except BaseException as e:  # KeyboardInterrupt while waiting: drop the rest
            failures.append(e)
            for rest in open_publishers():
                failures.extend(rest._abandon())
            break
    return failures


def _report(failures: List[BaseException]) -> None:
    for e in failures:
        detail = str(e) or type(e).__name__
        sys.stderr.write(f"ndbridge: at exit: {detail}\n")


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def _at_exit() -> None:
    """The ``atexit`` handler: closes open publishers; exits with status 1 if records were
    lost."""
    failures = close_all()
    if not failures:
        return
    _report(failures)
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    _flush_streams()
    os._exit(1)


def _at_child_exit() -> None:
    """The finalizer of a ``multiprocessing`` child: closes open publishers; makes the child's
    exit code 1 if records were lost."""
    failures = close_all()
    if not failures:
        return
    _report(failures)
    _flush_streams()
    exiting = sys.exc_info()[1]  # what the child's run() raised, if it raised
    if exiting is None or (isinstance(exiting, SystemExit) and exiting.code in (None, 0)):
        raise SystemExit(1)


def _after_fork_in_child() -> None:
    global _lock, _finalizer_pid
    _lock = threading.Lock()  # another thread may have held it at the fork
    _open.clear()
    _finalizer_pid = None


atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
