"""`ShutdownRequest`: how node processes take SIGINT / SIGTERM (nvila_nav/nodes/process.py).

The signals of real processes are in test_faults.py and the node tests; this checks the one case
a real signal hits too rarely to test by sending signals: a signal landing while the main thread
holds the lock of the Event it polls (inside `Event.wait`, between two bytecodes).
"""

import signal
import threading

from nvila_nav.nodes.process import ShutdownRequest


def test_a_signal_landing_while_the_events_lock_is_held_is_recorded_without_blocking():
    request = ShutdownRequest("test", deadline_s=60.0)
    request.running()  # running: the handler must not raise

    def signal_inside_event_wait() -> None:
        # Event.wait runs bytecodes with its condition's lock held; a handler that takes that
        # non-reentrant lock (Event.set) there blocks its own thread for good
        with request.requested._cond:
            request._on_signal(signal.SIGTERM, None)

    main = threading.Thread(target=signal_inside_event_wait, daemon=True)
    main.start()
    main.join(timeout=2.0)
    assert not main.is_alive(), "the handler blocked on the Event's lock"
    assert request.signal_name == "SIGTERM" and request.requested_at is not None

    request._finished.set()  # a finished shutdown: the watcher must not end this process
    watcher = threading.Thread(target=request._watch, daemon=True)
    watcher.start()
    assert request.requested.wait(2.0), "the watcher did not turn the signal into the request"
    assert request.wait() == "signal"
    watcher.join(timeout=2.0)
    assert not watcher.is_alive()


def test_a_signal_during_start_up_aborts_it_with_keyboard_interrupt():
    request = ShutdownRequest("test", deadline_s=60.0)
    request._finished.set()
    try:
        request._on_signal(signal.SIGINT, None)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("a signal during start-up must raise KeyboardInterrupt")
    request._on_signal(signal.SIGTERM, None)  # a second signal changes nothing
    assert request.signal_name == "SIGINT"
