"""The capacity counter under moto: a slot is taken and given back once per job."""

from __future__ import annotations

import pytest

from pijobs.shared.errors import CapacityFullError
from tests.integration.conftest import Cloud

A = "a" * 32
B = "b" * 32


def test_a_second_release_of_the_same_job_gives_nothing_back(cloud: Cloud) -> None:
    counter = cloud.capacity(limit=2)
    counter.acquire(A)
    counter.acquire(B)
    counter.release(A)

    counter.release(A)  # the worker and the reaper both clean up after the same job

    state = counter.state()
    assert state is not None and state["active"] == 1 and state["holders"] == {B}


def test_a_released_slot_can_be_taken_again_but_not_twice(cloud: Cloud) -> None:
    counter = cloud.capacity(limit=2)
    counter.acquire(A)
    counter.acquire(B)
    counter.release(A)
    counter.release(A)

    counter.acquire(A)
    counter.acquire(A)  # a duplicate delivery shares its job's slot

    state = counter.state()
    assert state is not None and state["active"] == 2 and state["holders"] == {A, B}


def test_slots_are_free_when_a_tick_was_the_first_to_write_the_item(cloud: Cloud) -> None:
    """The reaper may start the admission tick before anyone took a slot: its claim writes only the tick,
    and the first admission after it must still find every slot free (it once found none, for good)."""
    counter = cloud.capacity(limit=2)
    assert counter.claim_tick(1_000.0)

    counter.acquire(A)
    counter.acquire(B)

    state = counter.state()
    assert state is not None and state["active"] == 2 and state["holders"] == {A, B}
    assert state["tick_at"] == 1_000.0


def test_a_duplicate_delivery_below_the_limit_takes_no_second_slot(cloud: Cloud) -> None:
    # well below the limit, so only the "already holds one" condition can refuse the second take
    counter = cloud.capacity(limit=5)
    counter.acquire(A, owner="alice")

    counter.acquire(A, owner="alice")

    state = counter.state()
    assert state is not None and state["active"] == 1 and state["owners"] == {"alice": 1}


def test_an_owners_cap_admits_exactly_that_many(cloud: Cloud) -> None:
    counter = cloud.capacity(limit=10)
    jobs = [c * 32 for c in "cdef"]
    for job in jobs[:2]:
        counter.acquire(job, owner="alice", owner_cap=2)

    with pytest.raises(CapacityFullError):
        counter.acquire(jobs[2], owner="alice", owner_cap=2)
    counter.acquire(jobs[3], owner="bob", owner_cap=2)  # another owner's cap is its own

    state = counter.state()
    assert state is not None and state["owners"] == {"alice": 2, "bob": 1} and state["active"] == 3
