"""Fair share across tenants: start-time fair queuing over one pool of stack slots (docs/scheduling.md).

A job that waits for capacity is parked with a *tag*: its tenant's last tag, or the present of a virtual
clock if that is later, plus ``1 / weight``. Slots go to the waiting jobs in tag order. A tenant that parks
1,000 jobs at once gets tags ``v+1 .. v+1000``; a tenant that arrives later with one job gets ``v'+1``, where
``v'`` (the tag of the last job admitted) has only moved on by the jobs admitted since, so it is next or
nearly next, whatever the flood behind it. A weight of 2 spaces a tenant's tags by half: twice the share
while both wait. An idle tenant's last tag falls behind the clock, so what it used before is forgotten once
the clock passes it: recent usage decays, at the pace jobs are admitted.

Pure: no AWS. The store keeps the tags in a sparse index; the dispatcher admits (dispatcher/admission.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

DEFAULT_WEIGHT = 1.0
WEIGHT_RANGE = (0.01, 100.0)
# The waiting and live indexes spread their items over this many partition keys, so no one key of a GSI
# takes every write (a DynamoDB partition takes about 1,000 writes a second); readers query each and merge.
INDEX_SHARDS = 4
# MaxActiveStacksPerOwner's default: a tenant without a cap of its own may hold half the slots (at least
# one), so one tenant's long jobs never hold them all (docs/scheduling.md, "Caps").
HALF_THE_SLOTS = -1


@dataclass(frozen=True)
class TenantPolicy:
    """An operator's settings for one tenant (an API key); None: the platform default applies."""

    weight: float = DEFAULT_WEIGHT
    max_active: int | None = None


@dataclass(frozen=True, order=True)
class WaitingJob:
    """A parked job, ordered by its tag (then by id, so the order is total)."""

    tag: float
    job_id: str
    owner: str


def tag_step(weight: float) -> float:
    """How far apart a tenant's tags are: ``1 / weight``."""
    if not WEIGHT_RANGE[0] <= weight <= WEIGHT_RANGE[1]:
        raise ValueError(f"weight {weight} is outside {WEIGHT_RANGE[0]}..{WEIGHT_RANGE[1]}")
    return 1.0 / weight


def next_tag(clock: float, last_tag: float, weight: float) -> float:
    """The tag of a tenant's next waiting job (TenantStore.take_tag takes it atomically)."""
    return max(clock, last_tag) + tag_step(weight)


def shard_of(job_id: str) -> int:
    """Which index partition a job's items go to (stable: from the job id)."""
    return int(job_id[:8], 16) % INDEX_SHARDS


def default_owner_cap(setting: int, limit: int) -> int | None:
    """The cap of a tenant without one of its own, from MaxActiveStacksPerOwner (``setting``) and
    MaxActiveStacks (``limit``, as it is now): HALF_THE_SLOTS (the default) is half the slots, at least one;
    0 is no cap of a tenant's own; a positive number is that cap."""
    if setting == HALF_THE_SLOTS:
        return max(1, limit // 2)
    return setting if setting > 0 else None


def owner_limit(policy: TenantPolicy | None, default: int | None) -> int | None:
    """A tenant's own cap on live stacks: its override, else the platform's; None is no cap of its own."""
    if policy is not None and policy.max_active is not None:
        return policy.max_active
    return default


def admission_order(
    waiting: Iterable[WaitingJob],
    *,
    free: int,
    active: Mapping[str, int],
    limit_of: Callable[[str], int | None],
) -> list[WaitingJob]:
    """The jobs to admit into ``free`` slots: lowest tags first, skipping tenants at their own cap.

    ``active`` is each tenant's live stacks now; the jobs picked count towards it as they are picked.
    """
    picked: list[WaitingJob] = []
    counts = dict(active)
    for job in sorted(waiting):
        if len(picked) >= free:
            break
        cap = limit_of(job.owner)
        if cap is not None and counts.get(job.owner, 0) >= cap:
            continue
        counts[job.owner] = counts.get(job.owner, 0) + 1
        picked.append(job)
    return picked
