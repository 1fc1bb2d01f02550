"""Items restored from an older data directory join the indexes this version reads."""

from __future__ import annotations

from pijobs.shared.fairshare import shard_of
from pijobs.shared.store import DONE_SHARD, LIVE_SHARD

from pijobs.local.persist import _reindexed

JOB_ID = "0123456789abcdef0123456789abcdef"


def _job(status: str, **extra: dict[str, str]) -> dict[str, dict[str, str]]:
    return {"pk": {"S": f"job#{JOB_ID}"}, "job_id": {"S": JOB_ID}, "status": {"S": status}, **extra}


def test_a_finished_job_saved_before_the_finished_index_joins_it() -> None:
    item = _job("SUCCEEDED", finished_at={"S": "2026-12-01T10:00:00.000Z"})

    assert _reindexed(item) == {**item, DONE_SHARD: {"S": str(shard_of(JOB_ID))}}


def test_a_live_job_joins_the_live_index_and_a_job_without_an_end_time_stays_as_it_was() -> None:
    assert _reindexed(_job("RUNNING"))[LIVE_SHARD] == {"S": str(shard_of(JOB_ID))}
    assert _reindexed(_job("CANCELLED")) == _job("CANCELLED")  # no finished_at: nothing to sort it by
