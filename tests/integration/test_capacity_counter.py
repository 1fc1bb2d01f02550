"""The capacity item's own operations under moto: giving a slot back once, the operator's limit, the
reaper's conditional recount, and reads that see the write just made."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Cloud
from tests.integration.replica import LaggingReplica


def test_a_slot_is_given_back_once_and_only_by_its_holder(cloud: Cloud) -> None:
    counter = cloud.capacity(limit=2)
    assert counter.release("never-held") is False  # no capacity item yet

    counter.acquire("job-1", owner="key-a")
    assert counter.release("job-2") is False
    assert counter.release("job-1") is True
    assert counter.release("job-1") is False
    assert counter.state()["active"] == 0  # type: ignore[index]


def test_the_operator_s_limit_is_at_least_one(cloud: Cloud) -> None:
    counter = cloud.capacity()
    counter.set_limit(1)
    with pytest.raises(ValueError):
        counter.set_limit(0)
    assert counter.state()["limit"] == 1  # type: ignore[index]


def test_the_recount_writes_only_while_the_count_is_the_one_read(cloud: Cloud) -> None:
    counter = cloud.capacity(limit=3)
    counter.acquire("job-1", owner="key-a")

    assert counter.recount({"job-1": "key-a", "job-2": "key-b"}, expected_active=0) is False  # it moved
    assert counter.state()["holders"] == {"job-1"}  # type: ignore[index]
    assert counter.recount({"job-1": "key-a", "job-2": "key-b"}, expected_active=1) is True
    assert counter.state()["holders"] == {"job-1", "job-2"}  # type: ignore[index]


def test_a_slot_taken_a_moment_ago_is_seen(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = cloud.capacity(limit=2)
    counter.ensure()
    replica = LaggingReplica(monkeypatch)
    replica.lag()

    counter.acquire("job-1", owner="key-a")

    assert counter.state()["holders"] == {"job-1"}  # type: ignore[index]
