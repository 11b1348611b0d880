"""How a node process (a console script or `nvila-nav-bringup`) runs and ends on SIGINT / SIGTERM.

rclpy's own signal handler shuts the context down at once, so a node could no longer publish
its final "stop" or zero twist; every main disables it and uses `ShutdownRequest` instead:

- SIGINT and SIGTERM are handled alike. Until `running()` (or `wait()`) is called (start-up: a
  model may load for minutes) the first signal raises KeyboardInterrupt in the main thread, which
  aborts the start-up; the caller then cleans up what exists. Mains call `running()` as soon as
  their nodes exist, before the executor and its thread: a KeyboardInterrupt raised while a thread
  starts would leave an executor thread nobody joins, spinning on nodes being destroyed.
- While running, the executor spins in a background thread and the main thread waits on an
  event. A signal only requests the shutdown (the event is set soon after): the main thread
  (never blocked in rcl_wait, where a Python signal handler would not run until a timer fires)
  returns from `wait()` and the caller publishes its final commands and destroys its nodes.
- The first signal also arms a deadline (`deadline_s`, 1.5 s by default): a shutdown that has
  not finished by then (a callback or a model query that does not return) ends the process
  with exit status 1 and a line on stderr, so a process never hangs on a signal.
- The handler itself only records the signal (plain assignments) and may raise: it runs between
  two bytecodes of the main thread, possibly one holding a lock of `threading` (an Event being
  waited on, a thread being started), and taking a lock there can deadlock the process for good.
  A watcher thread started by `install()` sets `requested` and enforces the deadline.
- `finish(code)` ends the process with `os._exit` after flushing stdout and stderr: interpreter
  teardown with native threads still running (torch, the renderer, DDS) can hang or crash, and
  everything that matters (the final commands) is done by then.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any

SHUTDOWN_DEADLINE_S = 1.5
"""Seconds from the first SIGINT / SIGTERM to a forced exit if the clean shutdown has not ended."""
_POLL_S = 0.1
_WATCH_S = 0.02
"""How often the watcher thread looks for a recorded signal."""


class ShutdownRequest:
    """SIGINT / SIGTERM as a request to shut down; see the module docstring."""

    def __init__(self, name: str, deadline_s: float = SHUTDOWN_DEADLINE_S):
        self.name = name
        self.deadline_s = deadline_s
        self.requested = threading.Event()
        self.signal_name = ""
        self.requested_at: float | None = None
        self._raise = True
        self._finished = threading.Event()

    def install(self) -> ShutdownRequest:
        """Handle SIGINT and SIGTERM from now on (call from the main thread)."""
        threading.Thread(target=self._watch, name="shutdown-watch", daemon=True).start()
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.requested_at is not None:
            return
        self.signal_name = signal.Signals(signum).name
        self.requested_at = time.monotonic()
        if self._raise:
            raise KeyboardInterrupt

    def _watch(self) -> None:
        """Turn a recorded signal into `requested`, then end the process if the shutdown has
        not finished `deadline_s` after the signal."""
        while self.requested_at is None:
            time.sleep(_WATCH_S)
        self.requested.set()
        remaining = self.deadline_s - (time.monotonic() - self.requested_at)
        if self._finished.wait(max(remaining, 0.0)):
            return
        with contextlib.suppress(Exception):
            sys.stderr.write(
                f"{self.name}: shutdown after {self.signal_name} did not finish within "
                f"{self.deadline_s:g} s; exiting\n"
            )
            sys.stderr.flush()
        os._exit(1)

    def running(self) -> None:
        """Start-up is over: from now on a signal only requests the shutdown (no KeyboardInterrupt)."""
        self._raise = False

    def wait(self, executor_thread: threading.Thread | None = None, done: Any = None) -> str:
        """Block until a signal ("signal"), `done` (an Event-like: "done") is set, or the
        executor thread ended ("executor"). Signals no longer raise from here on."""
        self._raise = False
        while self.requested_at is None:
            if done is not None and done.is_set():
                return "done"
            if executor_thread is not None and not executor_thread.is_alive():
                return "executor"
            self.requested.wait(_POLL_S)  # set by the watcher soon after a signal
        return "signal"

    def finish(self, code: int = 0) -> None:
        """End the process now with `code` (see the module docstring)."""
        self._finished.set()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)


def spin_in_background(executor: Any, name: str = "executor") -> threading.Thread:
    """Spin `executor` in a daemon thread until it is shut down (or its context is)."""
    from rclpy.executors import ExternalShutdownException

    def spin() -> None:
        with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
            executor.spin()

    thread = threading.Thread(target=spin, name=name, daemon=True)
    thread.start()
    return thread


def stop_executor(executor: Any, thread: threading.Thread | None, timeout_s: float = 0.5) -> bool:
    """Stop spinning (a callback in progress finishes first); True when the thread ended."""
    executor.shutdown(timeout_sec=timeout_s)
    if thread is None:
        return True
    thread.join(timeout=timeout_s)
    return not thread.is_alive()
