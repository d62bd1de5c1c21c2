"""The scheduler's admission policy, deterministically: FIFO, batch limit, prefill-token budget."""

from collections import deque

import pytest

from chatterbox_server.engine.scheduler import Scheduler, SchedulerConfig


def scheduler(max_batch_size: int = 4, budget: int = 100) -> Scheduler[int]:
    return Scheduler(SchedulerConfig(max_batch_size, budget), prefill_cost=lambda cost: cost)


def test_admits_in_arrival_order_up_to_the_batch_limit():
    waiting = deque([10, 11, 12, 13, 14, 15])
    assert scheduler(max_batch_size=4).admit(waiting, running=1) == [10, 11, 12]
    assert list(waiting) == [13, 14, 15]


def test_a_full_batch_admits_nobody():
    waiting = deque([1, 2])
    assert scheduler(max_batch_size=3).admit(waiting, running=3) == []
    assert list(waiting) == [1, 2]


def test_prefill_budget_caps_the_tokens_of_one_step():
    waiting = deque([40, 40, 40, 5])
    assert scheduler(max_batch_size=8, budget=100).admit(waiting, running=2) == [40, 40]
    assert list(waiting) == [40, 5]  # FIFO: the small one does not jump the queue


def test_the_first_newcomer_is_taken_even_over_budget():
    waiting = deque([500, 10])
    assert scheduler(max_batch_size=8, budget=100).admit(waiting, running=5) == [500]
    assert scheduler(max_batch_size=8, budget=100).admit(waiting, running=5) == [10]


def test_invalid_limits_are_refused():
    with pytest.raises(ValueError):
        SchedulerConfig(max_batch_size=0)
    with pytest.raises(ValueError):
        SchedulerConfig(prefill_token_budget=0)
