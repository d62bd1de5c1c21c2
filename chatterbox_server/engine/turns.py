"""Taking turns on the CPU: a decoder call may have the cores to itself while the loop waits.

On a GPU the two stages overlap freely. On a small CPU both want every core, and running them at
once makes both slower (threads oversubscribed); `StageTurns` lets a decoder call wait for the
step in progress to end, then holds new steps back until the call is done.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

TURN_MODES = ("never", "first", "always")  # which decoder calls pause the loop


class StageTurns:
    """The loop wraps each step in `step()`; the vocoder stage wraps an exclusive call in `decoder()`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._decoder = False  # a decoder call holds the cores (or waits for the step to end)
        self._stepping = False

    @contextmanager
    def step(self) -> Iterator[None]:
        with self._cond:
            while self._decoder:
                self._cond.wait()
            self._stepping = True
        try:
            yield
        finally:
            with self._cond:
                self._stepping = False
                self._cond.notify_all()

    @contextmanager
    def decoder(self) -> Iterator[None]:
        with self._cond:
            while self._decoder:  # one exclusive call at a time
                self._cond.wait()
            self._decoder = True  # no new step starts from here on
            while self._stepping:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._decoder = False
                self._cond.notify_all()

    @property
    def decoder_holds(self) -> bool:
        return self._decoder
