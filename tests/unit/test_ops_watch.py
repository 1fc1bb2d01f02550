"""``pijobs ops status --watch`` (pijobs/cli/watch.py): the view built from what was read, the completions
history, the loop."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from rich.console import Console

from pijobs import ops
from pijobs.cli import watch

NOW = datetime(2026, 12, 3, 17, 30, 5, tzinfo=timezone.utc)


def _status(active: int = 3, limit: int = 10, dlq: int = 2) -> dict[str, Any]:
    return {
        "stack": "pijobs-prod",
        "queue": {"visible": 4, "in_flight": 1, "delayed": 6},
        "dead_letter_queue": {"visible": dlq, "in_flight": 0, "delayed": 0},
        "live_jobs": {"QUEUED": 5, "PROVISIONING": 1, "RUNNING": 2},
        "capacity": {"active_stacks": active, "max_active_stacks": limit, "holders": active},
        "waiting_for_capacity": {"jobs": 4, "tenants": 2},
        "event_source_mapping": {
            "id": "esm-1",
            "state": "Enabled",
            "batch_size": 5,
            "maximum_concurrency": 2,
            "maximum_batching_window_s": 0,
        },
    }


TENANTS = [
    {"tenant": "key-alice", "weight": 2.0, "max_active": 3, "own_cap": True, "live_stacks": 2, "waiting": 4},
    {
        "tenant": "key-bob",
        "weight": 1.0,
        "max_active": None,
        "own_cap": False,
        "live_stacks": 1,
        "waiting": 0,
    },
]


def render(renderable: Any, width: int = 120) -> str:
    console = Console(record=True, width=width, color_system=None)
    console.print(renderable)
    return console.export_text()


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_the_view_shows_queue_dlq_states_capacity_tenants_and_completions() -> None:
    completions = {
        "per_bucket": [0] * 27 + [1, 0, 8],
        "bucket_seconds": 60,
        "by_state": {"CANCELLED": 1, "FAILED": 1, "SUCCEEDED": 7, "TIMED_OUT": 0},
    }

    text = render(watch.watch_view(_status(), TENANTS, completions, now=NOW))

    assert "pijobs stack pijobs-prod at 17:30:05 UTC" in text
    assert "jobs queue" in text and "4 waiting, 1 in flight, 6 delayed" in text
    assert "dead-letter queue                 2 waiting" in text
    assert "QUEUED 5, PROVISIONING 1, RUNNING 2" in text
    assert "3 of MaxActiveStacks 10" in text and "██████░░░░░░░░░░░░░░  3/10 stacks" in text
    assert "waiting for a slot                4 jobs of 2 tenants" in text
    alice = next(line for line in text.splitlines() if "key-alice" in line).split()
    bob = next(line for line in text.splitlines() if "key-bob" in line).split()
    assert alice == ["key-alice", "2", "3", "2", "4"]
    assert bob == ["key-bob", "1", "none", "(default)", "1", "0"]
    assert "·" * 27 + "▁·█" in text and "9 jobs, 8 in the last bucket" in text
    assert "CANCELLED 1, FAILED 1, SUCCEEDED 7, TIMED_OUT 0" in text
    assert "last refresh failed" not in text


def test_the_view_says_when_no_tenant_is_active_and_when_a_refresh_failed() -> None:
    completions = watch.CompletionHistory(lambda after, until: []).view(NOW)

    text = render(watch.watch_view(_status(active=10), [], completions, now=NOW, problem="AWS refused Query"))

    assert "tenants: none with a live stack or a waiting job" in text
    assert "█" * 20 + "  10/10 stacks" in text
    assert "0 jobs, 0 in the last bucket" in text and "SUCCEEDED 0" in text
    assert "last refresh failed: AWS refused Query" in text


@pytest.mark.parametrize(
    ("counts", "line"),
    [
        ([0, 1, 2, 4, 8], "·▁▂▄█"),
        ([0, 0, 0], "···"),
        ([5, 5], "██"),
        ([1, 100], "▁█"),  # one job is still a mark, not a dot
        ([], ""),
    ],
)
def test_sparkline_scales_to_the_largest_count(counts: list[int], line: str) -> None:
    assert watch.sparkline(counts) == line


@pytest.mark.parametrize(
    ("active", "limit", "bar"),
    [(0, 10, "░" * 20), (5, 10, "█" * 10 + "░" * 10), (12, 10, "█" * 20), (1, 0, "█" * 20)],
)
def test_capacity_bar(active: int, limit: int, bar: str) -> None:
    assert watch.capacity_bar(active, limit) == bar


class FinishedIndex:
    """What JobStore.finished_between answers, from a list; records every window asked for."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.asked: list[tuple[str, str]] = []

    def finish(self, job_id: str, at: datetime, status: str = "SUCCEEDED") -> None:
        self.jobs.append({"job_id": job_id, "status": status, "finished_at": _iso(at)})

    def __call__(self, after: str, until: str) -> list[dict[str, Any]]:
        self.asked.append((after, until))
        return [j for j in self.jobs if after < j["finished_at"] <= until]


def test_completions_read_the_window_once_then_only_what_is_new() -> None:
    index = FinishedIndex()
    index.finish("old", NOW - timedelta(minutes=45))  # before the half hour shown
    index.finish("a", NOW - timedelta(minutes=29, seconds=30))
    index.finish("b", NOW - timedelta(seconds=20), status="FAILED")
    history = watch.CompletionHistory(index, buckets=30, bucket_seconds=60)

    history.refresh(NOW)
    later = NOW + timedelta(seconds=2)
    index.finish("c", later - timedelta(seconds=1))
    history.refresh(later)

    assert index.asked[0] == (_iso(NOW - timedelta(minutes=30)), _iso(NOW))
    assert index.asked[1] == (_iso(NOW - timedelta(seconds=30)), _iso(later))  # overlap for the index's lag
    view = history.view(later)
    assert view["per_bucket"][0] == 1 and view["per_bucket"][-1] == 2 and sum(view["per_bucket"]) == 3
    assert view["by_state"] == {"CANCELLED": 0, "FAILED": 1, "SUCCEEDED": 2, "TIMED_OUT": 0}  # b once


def test_completions_leave_the_view_when_they_leave_the_window() -> None:
    index = FinishedIndex()
    index.finish("a", NOW - timedelta(minutes=29, seconds=55))
    history = watch.CompletionHistory(index, buckets=30, bucket_seconds=60)
    history.refresh(NOW)
    assert sum(history.view(NOW)["per_bucket"]) == 1

    history.refresh(NOW + timedelta(seconds=10))

    assert sum(history.view(NOW + timedelta(seconds=10))["per_bucket"]) == 0


@pytest.fixture
def deployment(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """ops' readers replaced by a scripted deployment: ``reads`` counts them, ``fail_from`` breaks them."""
    from pijobs.shared.store import JobStore

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    script: dict[str, Any] = {"reads": 0, "fail_from": None, "tenants_fail_from": None}

    def gather(resources: Any, *, waiting: Any = None) -> dict[str, Any]:
        script["reads"] += 1
        if script["fail_from"] is not None and script["reads"] >= script["fail_from"]:
            raise RuntimeError("the endpoint went away")
        return _status(active=script["reads"])

    monkeypatch.setattr(ops, "gather_status", gather)

    def tenants(resources: Any, *, waiting: Any = None, busy_only: bool = False) -> list[dict[str, Any]]:
        assert busy_only  # every redraw: no scan of the table for tenants' settings
        if script["tenants_fail_from"] is not None and script["reads"] >= script["tenants_fail_from"]:
            raise RuntimeError("throttled")
        return TENANTS

    monkeypatch.setattr(ops, "tenant_rows", tenants)
    monkeypatch.setattr(JobStore, "waiting_by_owner", lambda self: {})
    monkeypatch.setattr(JobStore, "finished_between", lambda self, after, until: [])
    return script


RESOURCES = ops.StackResources("pijobs-prod", "q", "dlq", "table", "esm-1", 10)


def test_a_bounded_watch_shows_the_last_view_and_exits_zero(deployment: dict[str, Any]) -> None:
    console = Console(record=True, width=120, color_system=None, force_terminal=False)
    naps: list[float] = []

    code = watch.watch_status(RESOURCES, interval=0.5, iterations=3, console=console, sleep=naps.append)

    assert code == 0 and naps == [0.5, 0.5] and deployment["reads"] == 3
    assert "3/10 stacks" in console.export_text()  # the third read's figures


def test_ctrl_c_ends_the_watch_with_exit_zero(deployment: dict[str, Any]) -> None:
    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    console = Console(record=True, width=120, color_system=None)
    assert watch.watch_status(RESOURCES, console=console, sleep=interrupted) == 0
    assert deployment["reads"] == 1


def test_a_failed_refresh_keeps_the_last_figures_under_the_error(deployment: dict[str, Any]) -> None:
    deployment["fail_from"] = 2
    console = Console(record=True, width=120, color_system=None)

    assert watch.watch_status(RESOURCES, iterations=2, console=console, sleep=lambda s: None) == 0

    text = console.export_text()
    assert "1/10 stacks" in text and "last refresh failed: the endpoint went away" in text


def test_a_failed_first_read_is_the_command_failing(deployment: dict[str, Any]) -> None:
    deployment["fail_from"] = 1
    with pytest.raises(RuntimeError, match="went away"):
        watch.watch_status(RESOURCES, iterations=2, console=Console(record=True), sleep=lambda s: None)


def test_a_refresh_that_fails_halfway_shows_the_last_whole_view(deployment: dict[str, Any]) -> None:
    deployment["tenants_fail_from"] = 2  # the second status read works, its tenants' read does not
    console = Console(record=True, width=120, color_system=None)

    assert watch.watch_status(RESOURCES, iterations=2, console=console, sleep=lambda s: None) == 0

    last_view = console.export_text().split("pijobs stack")[-1]
    assert "1/10 stacks" in last_view and "2/10 stacks" not in last_view
    assert "last refresh failed: throttled" in last_view
