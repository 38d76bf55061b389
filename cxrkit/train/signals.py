"""Preemption signals: SIGUSR1/SIGTERM (scheduler) and SIGINT (user) only set a flag.

The training loop polls the flag once per step; with several processes the
ranks all-reduce it (max) so that every rank stops at the same step, saves,
and exits together.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)

PREEMPT_SIGNALS = ("SIGUSR1", "SIGTERM")
INTERRUPT_SIGNALS = ("SIGINT",)


class StopFlag:
    """Context manager that turns stop signals into a flag (main thread only).

    ``reason`` is "preempted" (SIGUSR1/SIGTERM), "interrupted" (SIGINT) or None.
    A second SIGINT restores the default handler, so a user can still force quit.

    Re-entrant: a stage enters the flag as soon as it starts (so a scheduler's
    USR1 during start-up is kept, not lost) and the training loop enters the
    same flag again; the handlers go back only when the outermost block ends.
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}
        self._depth = 0

    def __enter__(self) -> StopFlag:
        self._depth += 1
        if self._depth > 1 or threading.current_thread() is not threading.main_thread():
            return self  # already installed, or not the main thread (handlers need it)
        for name in PREEMPT_SIGNALS + INTERRUPT_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth > 0:
            return
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        if name in INTERRUPT_SIGNALS and self.reason == "interrupted":
            signal.signal(number, signal.default_int_handler)
        if self.reason != "preempted":  # a preemption outranks a Ctrl-C
            self.reason = "preempted" if name in PREEMPT_SIGNALS else "interrupted"
            self.signal_name = name
        log.warning("received %s: will checkpoint and stop after this step", name)

    def set(self, reason: str) -> None:
        """Raise the flag from code (tests, a time budget)."""
        self.reason = reason

    @property
    def code(self) -> int:
        """0 = go on, 1 = interrupted, 2 = preempted (max over ranks = strongest reason)."""
        return {None: 0, "interrupted": 1, "preempted": 2}[self.reason]


def reason_from_code(code: int) -> str | None:
    """Inverse of :attr:`StopFlag.code`."""
    return {0: None, 1: "interrupted", 2: "preempted"}[int(code)]
