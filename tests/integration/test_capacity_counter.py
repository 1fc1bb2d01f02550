"""The capacity item's own operations under moto: giving a slot back once, the operator's limit, the
reaper's conditional recount, and reads that see the write just made."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pijobs.shared.capacity import CAPACITY_KEY, MAX_LIVE_JOBS, NO_OWNER, CapacityCounter, LimitTooHighError
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


def test_the_operator_s_limit_may_be_the_most_live_jobs_the_item_holds_and_no_more(cloud: Cloud) -> None:
    counter = cloud.capacity()
    counter.set_limit(MAX_LIVE_JOBS)
    with pytest.raises(LimitTooHighError):
        counter.set_limit(MAX_LIVE_JOBS + 1)
    assert counter.state()["limit"] == MAX_LIVE_JOBS  # type: ignore[index]


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


class ReadThen:
    """A DynamoDB client whose first GetItem is answered, and then ``meanwhile`` runs before the caller goes
    on: another process's write landing between this one's read and its write."""

    def __init__(self, client: Any, meanwhile: Callable[[], object]) -> None:
        self._client, self._meanwhile = client, meanwhile

    def get_item(self, **kwargs: Any) -> Any:
        answer = self._client.get_item(**kwargs)
        meanwhile, self._meanwhile = self._meanwhile, lambda: None
        meanwhile()
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _kept_before_owners(cloud: Cloud, *holders: str) -> None:
    """The capacity item as it was kept before holders recorded their owners: a set of job ids, no owners."""
    cloud.ddb.put_item(
        TableName=cloud.table,
        Item={
            **CAPACITY_KEY,
            "active": {"N": str(len(holders))},
            "limit": {"N": "3"},
            "holders": {"SS": list(holders)},
        },
    )


def test_a_slot_held_in_an_item_kept_before_owners_were_recorded_is_given_back(cloud: Cloud) -> None:
    _kept_before_owners(cloud, "job-1", "job-2")
    counter = cloud.capacity()

    assert counter.release("job-1") is True
    assert counter.release("job-1") is False

    state = counter.state()
    assert state is not None and state["owner_of"] == {"job-2": NO_OWNER} and state["active"] == 1
    assert state["owners"] == {NO_OWNER: 1}


def test_an_item_kept_before_owners_were_recorded_takes_slots_after_the_operator_set_its_limit(
    cloud: Cloud,
) -> None:
    _kept_before_owners(cloud, "job-1")
    counter = cloud.capacity()
    counter.set_limit(3)  # (this adds an empty map of owners to the item, the holders still a set)

    counter.acquire("job-2", owner="key-a")
    assert counter.release("job-1") is True

    state = counter.state()
    assert state is not None and state["owner_of"] == {"job-2": "key-a"} and state["active"] == 1
    assert state["owners"] == {"key-a": 1} and state["limit"] == 3


def test_two_releases_of_one_slot_at_once_give_it_back_once(cloud: Cloud) -> None:
    """The same slot released twice at once (the worker's end and the reaper's, say) in an item still in its
    earlier shape: the release that reads it first and writes last answers False, the count moves once."""
    _kept_before_owners(cloud, "job-1", "job-2")
    other = cloud.capacity()
    answers: list[bool] = []
    counter = CapacityCounter(
        ReadThen(cloud.ddb, lambda: answers.append(other.release("job-1"))),
        cloud.table,
        default_limit=2,
    )

    answers.append(counter.release("job-1"))

    assert answers == [True, False]
    state = counter.state()
    assert state is not None and state["holders"] == {"job-2"} and state["active"] == 1


def test_two_first_admissions_at_once_both_take_their_slot(cloud: Cloud) -> None:
    """Both find no capacity item: the one that creates it second finds it made and goes on."""
    other = cloud.capacity(limit=3)
    counter = CapacityCounter(
        ReadThen(cloud.ddb, lambda: other.acquire("job-1", owner="key-a")), cloud.table, default_limit=3
    )

    counter.acquire("job-2", owner="key-b")

    state = counter.state()
    assert state is not None and state["owner_of"] == {"job-1": "key-a", "job-2": "key-b"}
    assert state["active"] == 2 and state["limit"] == 3
