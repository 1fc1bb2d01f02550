"""Fair share, pure: tags, weights, decay and per-tenant caps decide who gets a freed slot."""

from __future__ import annotations

from pathlib import Path

import pytest

from pijobs.local.cfn import load_template
from pijobs.shared.fairshare import (
    HALF_THE_SLOTS,
    INDEX_SHARDS,
    TenantPolicy,
    WaitingJob,
    admission_order,
    default_owner_cap,
    next_tag,
    owner_limit,
    shard_of,
)


def _park(clock: float, last: dict[str, float], owner: str, n: int, weight: float = 1.0) -> list[WaitingJob]:
    """``n`` jobs of ``owner`` parked one after another at clock ``clock``."""
    jobs = []
    for i in range(n):
        last[owner] = next_tag(clock, last.get(owner, 0.0), weight)
        jobs.append(WaitingJob(last[owner], f"{owner}-{i:04d}", owner))
    return jobs


def _serve(waiting: list[WaitingJob], slots: int = 1) -> list[WaitingJob]:
    """Admit everything one slot at a time, the way freed slots are filled; the order of admission."""
    served: list[WaitingJob] = []
    pending = list(waiting)
    while pending:
        (job,) = admission_order(pending, free=slots, active={}, limit_of=lambda owner: None)
        pending.remove(job)
        served.append(job)
    return served


def test_a_flood_cannot_delay_a_late_single_job_by_more_than_one_admission() -> None:
    last: dict[str, float] = {}
    flood = _park(0.0, last, "A", 1000)
    # Ten of A's jobs are admitted (the clock follows the admitted tags), then C arrives with one job.
    waiting = sorted(flood)[10:]
    clock = sorted(flood)[9].tag
    (single,) = _park(clock, last, "C", 1)

    order = _serve([*waiting, single])

    assert order.index(single) <= 1  # next, or after the one A job with the same tag


def test_two_backlogged_tenants_alternate_and_a_weight_of_two_gets_twice_the_share() -> None:
    last: dict[str, float] = {}
    order = _serve([*_park(0.0, last, "A", 30), *_park(0.0, last, "B", 30, weight=2.0)])

    first_30 = [job.owner for job in order[:30]]
    assert first_30.count("B") == 20 and first_30.count("A") == 10
    even = _serve([*_park(0.0, {}, "A", 10), *_park(0.0, {}, "B", 10)])
    assert [job.owner for job in even[:6]].count("A") == 3


def test_recent_usage_decays_once_the_clock_passes_it() -> None:
    last: dict[str, float] = {}
    _park(0.0, last, "A", 100)  # A used a lot: its last tag is 100
    # While A's backlog is ahead of the clock, A's next job queues behind it ...
    assert next_tag(50.0, last["A"], 1.0) == 101.0
    # ... but once the clock has passed A's last job, A is treated like any newcomer: no lasting penalty.
    assert next_tag(200.0, last["A"], 1.0) == next_tag(200.0, 0.0, 1.0) == 201.0


def test_a_tenant_at_its_own_cap_is_skipped_and_the_slots_go_to_the_next_tags() -> None:
    waiting = [WaitingJob(1.0, "a1", "A"), WaitingJob(2.0, "a2", "A"), WaitingJob(3.0, "b1", "B")]

    picked = admission_order(waiting, free=2, active={"A": 1}, limit_of={"A": 2}.get)

    assert [job.job_id for job in picked] == ["a1", "b1"]  # A reaches its cap of 2 with a1
    none_for_a = admission_order(waiting, free=3, active={"A": 2}, limit_of={"A": 2}.get)
    assert [job.job_id for job in none_for_a] == ["b1"]


def test_a_tenant_without_live_stacks_gets_as_many_slots_as_its_cap() -> None:
    waiting = [WaitingJob(1.0, "a1", "A"), WaitingJob(2.0, "a2", "A"), WaitingJob(3.0, "a3", "A")]

    picked = admission_order(waiting, free=3, active={"B": 1}, limit_of={"A": 2}.get)

    assert [job.job_id for job in picked] == ["a1", "a2"]


def test_free_slots_bound_the_picks_and_ties_break_by_job_id() -> None:
    waiting = [WaitingJob(1.0, "z", "A"), WaitingJob(1.0, "y", "B"), WaitingJob(0.5, "x", "C")]

    assert [job.job_id for job in admission_order(waiting, free=2, active={}, limit_of=lambda o: None)] == [
        "x",
        "y",
    ]
    assert admission_order(waiting, free=0, active={}, limit_of=lambda o: None) == []


def test_owner_limit_prefers_the_tenants_own_cap() -> None:
    assert owner_limit(None, None) is None
    assert owner_limit(None, 3) == 3
    assert owner_limit(TenantPolicy(max_active=1), 3) == 1
    assert owner_limit(TenantPolicy(weight=2.0), 3) == 3


@pytest.mark.parametrize("weight", [0.0, -1.0, 0.0099, 100.01, 1000.0])
def test_weights_outside_the_range_are_refused(weight: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        next_tag(0.0, 0.0, weight)


def test_the_weights_at_the_ends_of_the_range_space_tags_by_100_and_by_a_hundredth() -> None:
    """A weight is 0.01..100, both ends included (pijobs ops tenant --weight)."""
    assert next_tag(5.0, 0.0, 0.01) == pytest.approx(105.0)
    assert next_tag(5.0, 0.0, 100.0) == pytest.approx(5.01)


def test_a_job_s_index_shard_is_the_same_in_every_version() -> None:
    """Jobs stored by an earlier version stay in the partitions the readers query: the shard of a job id
    is the first 8 hex digits of its id, modulo 4."""
    shards = {
        prefix: shard_of(prefix + "0" * 24) for prefix in ("00000000", "0000000f", "00000010", "000000ff")
    }

    assert shards == {"00000000": 0, "0000000f": 3, "00000010": 0, "000000ff": 3}
    assert {shard_of(f"{n:08x}" + "0" * 24) for n in range(64)} == {0, 1, 2, 3}


def test_shards_spread_job_ids_over_every_partition() -> None:
    shards = {shard_of(f"{n:08x}" + "0" * 24) for n in range(64)}
    assert shards == set(range(INDEX_SHARDS))


@pytest.mark.parametrize(
    ("setting", "limit", "cap"),
    [(HALF_THE_SLOTS, 4, 2), (HALF_THE_SLOTS, 5, 2), (HALF_THE_SLOTS, 1, 1), (0, 4, None), (3, 4, 3)],
)
def test_the_default_cap_is_half_the_slots_unless_the_operator_set_one(
    setting: int, limit: int, cap: int | None
) -> None:
    assert default_owner_cap(setting, limit) == cap
    assert owner_limit(TenantPolicy(max_active=7), default_owner_cap(setting, limit)) == 7


def test_the_templates_default_per_tenant_cap_is_half_the_slots() -> None:
    """A stack deployed with MaxActiveStacksPerOwner at its default caps each tenant at half the slots."""
    template = load_template(Path(__file__).resolve().parents[2] / "infra" / "primary.yaml")
    parameter = template["Parameters"]["MaxActiveStacksPerOwner"]

    assert default_owner_cap(int(parameter["Default"]), 6) == 3
    assert default_owner_cap(int(parameter["MinValue"]), 6) == 3
