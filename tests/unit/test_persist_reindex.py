"""Items restored from an older data directory join the indexes this version reads."""

from __future__ import annotations

from pijobs.local.persist import _rebucketed, _reindexed
from pijobs.shared.capacity import CAPACITY_KEY
from pijobs.shared.fairshare import shard_of
from pijobs.shared.store import DONE_SHARD, LIVE_SHARD

JOB_ID = "0123456789abcdef0123456789abcdef"


def _job(status: str, **extra: dict[str, str]) -> dict[str, dict[str, str]]:
    return {"pk": {"S": f"job#{JOB_ID}"}, "job_id": {"S": JOB_ID}, "status": {"S": status}, **extra}


def test_a_finished_job_saved_before_the_finished_index_joins_it() -> None:
    item = _job("SUCCEEDED", finished_at={"S": "2026-12-01T10:00:00.000Z"})

    assert _reindexed(item) == {**item, DONE_SHARD: {"S": str(shard_of(JOB_ID))}}


def test_a_live_job_joins_the_live_index_and_a_job_without_an_end_time_stays_as_it_was() -> None:
    assert _reindexed(_job("RUNNING"))[LIVE_SHARD] == {"S": str(shard_of(JOB_ID))}
    assert _reindexed(_job("CANCELLED")) == _job("CANCELLED")  # no finished_at: nothing to sort it by


def test_a_state_change_event_is_restored_as_it_was_never_as_a_job() -> None:
    """An event item names a job and a status too; it joins no index (the reaper would read it as a job)."""
    event = {
        "pk": {"S": f"event#{JOB_ID}#1#RUNNING"},
        "job_id": {"S": JOB_ID},
        "status": {"S": "RUNNING"},
        "previous": {"S": "PROVISIONING"},
    }

    assert _reindexed(event) == event


def test_the_capacity_item_forgets_the_last_runs_admission_tick() -> None:
    # the tick's message died with the old run's queue: a kept tick_at would say one is on its way, and the
    # waiting jobs would wait for nothing until the reaper noticed
    item = {"pk": CAPACITY_KEY["pk"], "active": {"N": "0"}, "tick_at": {"S": "2026-12-01T10:00:00.000Z"}}

    assert _reindexed(item) == {"pk": CAPACITY_KEY["pk"], "active": {"N": "0"}}


def test_a_restored_result_names_this_runs_bucket_and_nothing_else_changes() -> None:
    result = {"M": {"bucket": {"S": "old-bucket"}, "key": {"S": f"results/k/{JOB_ID}/pi.txt"}}}
    item = _job("SUCCEEDED", result=result)

    moved = _rebucketed(item, "old-bucket", "new-bucket")

    assert moved["result"]["M"] == {**result["M"], "bucket": {"S": "new-bucket"}}
    assert {k: v for k, v in moved.items() if k != "result"} == {
        k: v for k, v in item.items() if k != "result"
    }
    assert _rebucketed(item, None, "new-bucket") == item  # a data dir that never said its bucket
    other = _job("SUCCEEDED", result={"M": {"bucket": {"S": "someone-else"}}})
    assert _rebucketed(other, "old-bucket", "new-bucket") == other
