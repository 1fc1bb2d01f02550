"""The pipeline benchmark's pure parts: percentiles, phases, the fairness figures, the side-by-side table."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench import pipeline as bench
from bench.pipeline import FairnessRun, Job, TreeRun
from pijobs.shared.capacity import MAX_LIVE_JOBS, capacity_item, item_size


def job(
    tenant: str = "A", *, t: float = 100.0, wait: float = 1.0, run: float = 0.5, **changes: object
) -> Job:
    fields: dict[str, Any] = {
        "tenant": tenant,
        "job_id": f"{tenant}-{t}",
        "status": "SUCCEEDED",
        "submitted": t,
        "created_at": t + 0.01,
        "dispatched_at": t + 0.01 + wait,
        "started_at": t + 0.01 + wait + 0.2,
        "finished_at": t + 0.01 + wait + 0.2 + run,
        "seen": t + 0.01 + wait + 0.2 + run + 0.05,
        "results": 1,
    }
    fields.update(changes)
    return Job(**fields)


def test_percentile_interpolates_between_ranks() -> None:
    assert bench.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert bench.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert bench.percentile(list(map(float, range(1, 21))), 95) == pytest.approx(19.05)
    assert bench.percentile([7.0], 95) == 7.0
    assert math.isnan(bench.percentile([], 50))


def test_latency_rows_split_the_client_time_into_phases_of_succeeded_jobs() -> None:
    jobs = [job(t=100, wait=0.1), job(t=200, wait=0.3), job(t=300, status="FAILED", wait=9.0)]
    rows = bench.latency_rows(jobs)
    assert rows["created -> dispatched"][0] == pytest.approx(0.2)
    assert rows["started -> finished"] == (pytest.approx(0.5), pytest.approx(0.5))
    total = rows["submit -> SUCCEEDED (client)"][0]
    parts = [rows[name][0] for name, _, _ in bench.PHASES[:-1]]
    assert total == pytest.approx(sum(parts))


def test_fairness_rows_per_tenant_waits_rank_counts_and_losses() -> None:
    jobs = [job("A", t=float(i), wait=10.0 + i) for i in range(4)]
    jobs += [job("B", t=5.0, wait=2.0), job("C", t=6.0, wait=1.0, results=2)]
    run = FairnessRun(jobs=jobs, queue_sends=9, queue_deliveries=12, peak_workers=5, peak_stacks=4)
    rows = bench.fairness_rows(run)
    assert rows["A wait median s"] == pytest.approx(11.5)
    assert rows["A wait max s"] == pytest.approx(13.0)
    assert rows["C wait max s"] == pytest.approx(1.0)
    assert rows["C last completion rank"] == 2.0  # after B, before all of A
    assert rows["queue sends / job"] == pytest.approx(1.5)
    assert rows["dispatcher records / job"] == pytest.approx(2.0)
    assert rows["peak live job stacks"] == 4.0 and rows["peak live workers"] == 5.0
    assert rows["jobs lost or not exactly one result"] == 1.0  # C's job has two result files


def test_table_puts_trees_side_by_side_with_ratios() -> None:
    old = TreeRun("dbeb8fc", latency=[job(wait=2.0)], fairness=FairnessRun([job("C")], 4, 4, 1))
    new = TreeRun("current", latency=[job(wait=0.5)], fairness=FairnessRun([job("C")], 1, 1, 1))
    text = bench.table([old, new])
    lines = text.splitlines()
    assert lines[0] == "| figure | dbeb8fc | current | current / dbeb8fc |"
    dispatched = next(line for line in lines if "created -> dispatched, median" in line)
    assert dispatched.endswith("| 2.000 s | 0.500 s | 0.25 |")
    sends = next(line for line in lines if "queue sends / job" in line)
    assert sends.endswith("| 4 | 1 | 0.25 |")
    assert "| fairness: jobs lost or not exactly one result | 0 | 0 | - |" in lines


def test_scaled_keeps_at_least_one_job_per_tenant() -> None:
    assert bench.scaled(bench.TENANTS, 0.1) == {"A": 60, "B": 6, "C": 1}
    assert bench.scaled({"A": 600}, 0.0001) == {"A": 1}


def test_bounded_slowdown_does_not_magnify_short_runs() -> None:
    assert bench.bounded_slowdown(0.0, 2.0) == 1.0
    assert bench.bounded_slowdown(18.0, 2.0) == pytest.approx(2.0)  # (18 + 2) / 10, not 20 / 2
    assert bench.bounded_slowdown(60.0, 60.0) == pytest.approx(2.0)


def test_jains_index_is_one_for_equal_shares_and_one_over_n_for_one_taker() -> None:
    assert bench.jain_index([3.0, 3.0, 3.0]) == pytest.approx(1.0)
    assert bench.jain_index([9.0, 0.0, 0.0]) == pytest.approx(1 / 3)
    assert math.isnan(bench.jain_index([0.0, 0.0]))


def test_shares_count_admissions_while_every_tenant_waits() -> None:
    # A from t=0, B from t=10; A's last admission at 40, B's at 30: the window is 10..30.
    jobs = [job("A", t=float(t), wait=w) for t, w in ((0, 5), (0, 12), (0, 20), (0, 40))]
    jobs += [job("B", t=10.0, wait=w) for w in (5, 10, 20)]
    shares = bench.backlogged_shares(jobs)

    assert shares == {"A": 2.0, "B": 3.0}
    assert bench.backlogged_shares(jobs, {"B": 3.0})["B"] == pytest.approx(1.0)
    assert bench.backlogged_shares([job("A")]) == {}


def test_the_small_tenants_last_admission_is_ranked_from_the_first_ones_arrival() -> None:
    flood = [job("A", t=0.0, wait=float(w)) for w in range(1, 11)]  # admitted at 1..10
    small = [job("B", t=4.5, wait=1.0), job("C", t=4.6, wait=2.0)]  # admitted at ~5.5 and ~6.6
    assert bench.last_small_admission_rank(flood + small, ("B", "C"), "B") == 4.0  # 5, 5.5, 6, 6.6
    assert math.isnan(bench.last_small_admission_rank(flood, ("B", "C"), "B"))


def test_the_fairness_rows_have_p95_slowdown_jains_index_and_refusals() -> None:
    jobs = [job("A", t=0.0, wait=w, run=1.0) for w in (1.0, 2.0, 3.0)] + [job("B", t=0.5, wait=1.0)]
    rows = bench.fairness_rows(
        FairnessRun(jobs=jobs, queue_sends=4, queue_deliveries=4, peak_workers=1, refused=3)
    )

    assert rows["A wait p95 s"] == pytest.approx(2.9)
    assert rows["A bounded slowdown max"] == 1.0  # short runs: (3 + 1.2) / 10 is below 1
    assert rows["submissions refused (503)"] == 3.0
    assert 0.5 <= rows["Jain's index of admissions / weight while all wait"] <= 1.0


def test_item_size_follows_dynamodbs_rules_and_the_capacity_item_grows_per_holder() -> None:
    assert item_size({"pk": {"S": "abc"}, "n": {"N": "1234"}}) == 2 + 3 + 1 + 3
    assert item_size({"m": {"M": {"k": {"S": "vv"}}}}) == 1 + 3 + (1 + 2 + 1)

    one, many = (item_size(capacity_item(n, tenants=n)) for n in (1_000, 2_000))
    assert many - one == pytest.approx(1_000 * (32 + 10 + 1) + 1_000 * (10 + 2 + 1), rel=0.01)


def test_the_scale_rows_show_the_capacity_item_at_the_most_live_jobs_allowed() -> None:
    figures = bench.capacity_sizes(tenants=1_000)

    assert figures["capacity item: most live jobs allowed (MaxActiveStacks' MaxValue)"] == MAX_LIVE_JOBS
    assert figures[f"capacity item bytes at {MAX_LIVE_JOBS:,} live jobs, one tenant each"] < 400 * 1024
    assert MAX_LIVE_JOBS < figures["capacity item: live jobs (one tenant each) at DynamoDB's 400 KB"] < 8_000
