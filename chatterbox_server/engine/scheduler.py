"""Which waiting sequences join the running batch at the next step: a pure policy, unit-tested.

FIFO, at most `max_batch_size` rows in all, and at most `prefill_token_budget` prompt tokens
prefilled per step so a long prompt cannot stall the streams already running (the first
newcomer of a step is always taken, so nothing starves behind the budget).
"""

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class SchedulerConfig:
    max_batch_size: int = 8
    prefill_token_budget: int = 2048  # prompt tokens prefilled per step at most (beyond the first newcomer)

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {self.max_batch_size}")
        if self.prefill_token_budget < 1:
            raise ValueError(f"prefill_token_budget must be at least 1, got {self.prefill_token_budget}")


class Scheduler(Generic[T]):
    """Picks newcomers from the front of `waiting` for the next step."""

    def __init__(self, config: SchedulerConfig, prefill_cost: Callable[[T], int]):
        self.config = config
        self._cost = prefill_cost

    def admit(self, waiting: deque[T], running: int) -> list[T]:
        """Pop and return the sequences that join now (possibly none)."""
        admitted: list[T] = []
        tokens = 0
        while waiting and running + len(admitted) < self.config.max_batch_size:
            cost = self._cost(waiting[0])
            if admitted and tokens + cost > self.config.prefill_token_budget:
                break
            admitted.append(waiting.popleft())
            tokens += cost
        return admitted
