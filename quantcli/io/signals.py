"""Signals: SIGINT and SIGTERM become exceptions (so temp files are removed on the way out), and
`held()` marks the few steps that must not be cut in half (create a temp file and register it for
removal; move a finished output into place): a signal arriving there is acted on right after.

A leaf module (only the standard library), so the command line can install the handlers before
it imports anything heavy."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator, NoReturn

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """SIGTERM, turned into an exception so that temp files are cleaned up on the way out."""


_held = 0  # depth of held() sections in the main thread
_pending: list[int] = []  # signals that arrived while held


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt()
    raise Interrupted()


def on_signal(signum: int, frame: Any) -> None:
    """The handler `install` sets: raise now, or once the held section ends."""
    if _held:
        _pending.append(signum)
        return
    _raise_for(signum)


def install() -> None:
    """SIGINT -> KeyboardInterrupt, SIGTERM -> Interrupted, both deferred inside `held()`.
    Main thread only (Python runs handlers there); elsewhere a no-op."""
    if threading.current_thread() is threading.main_thread():
        for sig in _SIGNALS:
            signal.signal(sig, on_signal)


@contextmanager
def held() -> Iterator[None]:
    """Run a short step whole: SIGINT/SIGTERM that arrive meanwhile take effect when it ends.

    Two layers: our handler defers (it runs in the main thread whichever thread the kernel chose);
    the signals are also blocked in this thread, which protects library callers whose own
    handlers do not know about `held()`."""
    global _held
    main = threading.current_thread() is threading.main_thread()
    if not main:
        yield
        return
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if not _held and _pending:
            signum = _pending[0]
            _pending.clear()
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            _raise_for(signum)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def exit_interrupted(signal_exception: BaseException) -> NoReturn:
    """The end of a run a signal stopped: one line and the shell's status (130 for SIGINT, 143
    for SIGTERM). Used by the entry point at start-up and around the command."""
    import sys
    word, status = ("interrupted", 130) if isinstance(signal_exception, KeyboardInterrupt) else ("terminated", 143)
    sys.stderr.write(f"quant: {word}; no output was written\n")
    raise SystemExit(status) from None

