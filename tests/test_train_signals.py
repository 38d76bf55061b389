"""Stop signals become a flag (no exception mid-step); handlers are restored afterwards."""

from __future__ import annotations

import os
import signal

from cxrkit.train.signals import StopFlag, reason_from_code


def test_sigusr1_and_sigterm_mean_preempted():
    for number in (signal.SIGUSR1, signal.SIGTERM):
        with StopFlag() as flag:
            os.kill(os.getpid(), number)
            assert flag.reason == "preempted" and flag.code == 2
            assert flag.signal_name == signal.Signals(number).name


def test_sigint_means_interrupted_and_preemption_outranks_it():
    with StopFlag() as flag:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.reason == "interrupted" and flag.code == 1
        os.kill(os.getpid(), signal.SIGUSR1)
        assert flag.reason == "preempted"


def test_previous_handlers_come_back_on_exit():
    before = signal.getsignal(signal.SIGUSR1)
    with StopFlag():
        assert signal.getsignal(signal.SIGUSR1) != before
    assert signal.getsignal(signal.SIGUSR1) == before


def test_codes_round_trip_for_the_all_reduce():
    assert [reason_from_code(c) for c in (0, 1, 2)] == [None, "interrupted", "preempted"]


def test_a_signal_before_the_inner_block_is_kept_and_handlers_return_after_the_outer():
    before = signal.getsignal(signal.SIGUSR1)
    with StopFlag() as flag:  # the stage enters first, during start-up...
        os.kill(os.getpid(), signal.SIGUSR1)
        with flag:  # ...the training loop enters the same flag again
            assert flag.reason == "preempted"
        assert signal.getsignal(signal.SIGUSR1) != before  # still the flag's handler
    assert signal.getsignal(signal.SIGUSR1) == before
