"""The EMF lines the reaper writes: valid CloudWatch embedded metric format, names from shared/metrics.py."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pytest

from pijobs.shared import metrics
from pijobs.shared.status import TERMINAL_STATES, JobStatus

NOW = datetime(2026, 12, 3, 17, 0, tzinfo=timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _job(status: JobStatus, queued: float = 1.0, provisioning: float = 2.0, running: float = 3.0) -> dict:
    created = NOW - timedelta(seconds=queued + provisioning + running)
    dispatched = created + timedelta(seconds=queued)
    started = dispatched + timedelta(seconds=provisioning)
    return {
        "job_id": f"{status.value}-{queued}",
        "status": status.value,
        "created_at": _iso(created),
        "dispatched_at": _iso(dispatched),
        "started_at": _iso(started),
        "finished_at": _iso(started + timedelta(seconds=running)),
    }


def assert_valid_emf(document: dict) -> None:
    """What the specification asks of a document: every metric and dimension named is a root member."""
    directive = document["_aws"]["CloudWatchMetrics"][0]
    assert isinstance(document["_aws"]["Timestamp"], int)
    for dimension_set in directive["Dimensions"]:
        assert all(isinstance(document[name], str) for name in dimension_set)
    for metric in directive["Metrics"]:
        value = document[metric["Name"]]
        values = value if isinstance(value, list) else [value]
        assert 1 <= len(values) <= 100 and all(isinstance(v, (int, float)) for v in values)
        assert metric["Unit"] in ("Count", "Seconds")


def test_a_gauge_line_is_one_json_object_of_the_pijobs_namespace() -> None:
    out = io.StringIO()
    gauges = {metrics.ACTIVE_STACKS: 3, metrics.MAX_ACTIVE_STACKS: 10, metrics.WAITING_JOBS: 7}

    metrics.emit(metrics.emf_document(gauges, stack="prod", timestamp=NOW), out)

    (line,) = out.getvalue().splitlines()
    document = json.loads(line)
    assert_valid_emf(document)
    directive = document["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == metrics.NAMESPACE == "pijobs"
    assert directive["Dimensions"] == [[metrics.STACK_DIMENSION]] and document["Stack"] == "prod"
    assert [m["Name"] for m in directive["Metrics"]] == list(gauges)
    assert {name: document[name] for name in gauges} == gauges
    assert document["_aws"]["Timestamp"] == int(NOW.timestamp() * 1000)


def test_finished_jobs_are_counted_by_final_state_with_each_phase_timed() -> None:
    jobs = [_job(JobStatus.SUCCEEDED), _job(JobStatus.SUCCEEDED, queued=5), _job(JobStatus.TIMED_OUT)]
    cancelled_in_queue = {
        "job_id": "c",
        "status": "CANCELLED",
        "created_at": _iso(NOW),
        "finished_at": _iso(NOW),
    }

    counts, durations = metrics.finished_documents([*jobs, cancelled_in_queue], stack="s", timestamp=NOW)

    assert_valid_emf(counts)
    assert_valid_emf(durations)
    assert {metrics.FINISHED[s]: counts[metrics.FINISHED[s]] for s in TERMINAL_STATES} == {
        "JobsSucceeded": 2,
        "JobsFailed": 0,
        "JobsTimedOut": 1,
        "JobsCancelled": 1,
    }
    assert sorted(durations["QueuedSeconds"]) == [1.0, 1.0, 5.0]  # the job cancelled in the queue has none
    assert durations["ProvisioningSeconds"] == [2.0, 2.0, 2.0]
    assert durations["RunningSeconds"] == [3.0, 3.0, 3.0]


def test_more_than_a_hundred_durations_are_split_over_documents() -> None:
    jobs = [_job(JobStatus.SUCCEEDED, queued=i) for i in range(250)]

    counts, *durations = metrics.finished_documents(jobs, stack="s", timestamp=NOW)

    assert counts["JobsSucceeded"] == 250
    assert [len(d["RunningSeconds"]) for d in durations] == [100, 100, 50]
    for document in durations:
        assert_valid_emf(document)
    assert sorted(v for d in durations for v in d["QueuedSeconds"]) == [float(i) for i in range(250)]


def test_a_sweep_with_nothing_finished_still_says_zero() -> None:
    (counts,) = metrics.finished_documents([], stack="s", timestamp=NOW)
    assert all(counts[name] == 0 for name in metrics.FINISHED.values())


@pytest.mark.parametrize(
    ("values", "problem"),
    [({"ActiveStack": 1}, "not a pijobs metric"), ({"RunningSeconds": [1.0] * 101}, "101 values")],
)
def test_what_emf_would_drop_is_refused(values: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        metrics.emf_document(values, stack="s", timestamp=NOW)


def test_lines_go_to_stdout_only_inside_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    given = io.StringIO()
    assert metrics.destination() is None
    assert metrics.destination(given) is given
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "pijobs-reaper")
    import sys

    assert metrics.destination() is sys.stdout


def test_every_name_is_unique_and_a_valid_cloudwatch_name() -> None:
    assert len(set(metrics.METRIC_NAMES)) == len(metrics.METRIC_NAMES)
    assert all(name.isascii() and name.isalnum() and len(name) <= 255 for name in metrics.METRIC_NAMES)
