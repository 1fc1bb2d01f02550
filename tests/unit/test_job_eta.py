"""A running job's estimated finish, from its own rate: the API computes it once, the command line and the
console show it."""

from __future__ import annotations

from typing import Any

import pytest

from pijobs.api_handler.views import estimated_finish
from pijobs.shared.models import JobRecord
from pijobs.shared.status import JobStatus


def job(**fields: Any) -> JobRecord:
    base: dict[str, Any] = {
        "job_id": "a" * 32,
        "owner": "k",
        "params": {"digits": 3_000_000},
        "status": JobStatus.RUNNING,
        "created_at": "2026-12-06T20:00:00.000Z",
        "updated_at": "2026-12-06T20:00:00.000Z",
        "started_at": "2026-12-06T20:00:10.000Z",
    }
    return JobRecord(**{**base, **fields})


def test_a_quarter_done_in_ten_seconds_finishes_thirty_seconds_later() -> None:
    running = job(progress=0.25, heartbeat_at="2026-12-06T20:00:20.000Z")
    assert estimated_finish(running) == "2026-12-06T20:00:50.000Z"


@pytest.mark.parametrize(
    "fields",
    [
        {"progress": None, "heartbeat_at": "2026-12-06T20:00:20.000Z"},  # no reading yet
        {"progress": 0.0, "heartbeat_at": "2026-12-06T20:00:20.000Z"},  # no rate yet
        {"progress": 0.5, "heartbeat_at": None},
        {"progress": 0.5, "heartbeat_at": "2026-12-06T20:00:10.000Z"},  # read as it started
        {"progress": 0.5, "heartbeat_at": "2026-12-06T20:00:20.000Z", "status": JobStatus.SUCCEEDED},
        {"progress": 0.5, "heartbeat_at": "2026-12-06T20:00:20.000Z", "status": JobStatus.QUEUED},
    ],
)
def test_no_estimate_without_a_rate_or_once_it_ended(fields: dict[str, Any]) -> None:
    assert estimated_finish(job(**fields)) is None
