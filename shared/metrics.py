"""CloudWatch metrics as Embedded Metric Format log lines: the one place for their names.

A Lambda function's stdout goes to its log group, and CloudWatch Logs turns a line that is one EMF JSON
object into metric data points: no PutMetricData call, no IAM permission for it. The reaper emits, every
sweep, the gauges (active stacks against the cap, jobs waiting for a slot) and what finished since its last
sweep (jobs by final state, each phase's duration). The dashboard in ``infra/primary.yaml`` reads these names;
a template test checks that it reads exactly these.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from pijobs.shared.status import TERMINAL_STATES, JobStatus

NAMESPACE = "pijobs"
STACK_DIMENSION = "Stack"  # the primary stack's name: two deployments in one account never mix
MAX_VALUES = 100  # EMF: a metric's value array holds at most 100 values

# Gauges, one value per reaper sweep.
ACTIVE_STACKS = "ActiveStacks"
MAX_ACTIVE_STACKS = "MaxActiveStacks"
WAITING_JOBS = "WaitingJobs"
GAUGES = (ACTIVE_STACKS, MAX_ACTIVE_STACKS, WAITING_JOBS)


def finished_metric(state: JobStatus) -> str:
    """``JobsSucceeded``, ``JobsTimedOut``, ...: jobs that reached ``state`` (a count)."""
    return "Jobs" + state.value.title().replace("_", "")


FINISHED = {state: finished_metric(state) for state in sorted(TERMINAL_STATES)}


@dataclass(frozen=True)
class Phase:
    metric: str
    start: str  # the job record's field where the phase starts
    end: str  # ... and where it ends


PHASES = (
    Phase("QueuedSeconds", "created_at", "dispatched_at"),
    Phase("ProvisioningSeconds", "dispatched_at", "started_at"),
    Phase("RunningSeconds", "started_at", "finished_at"),
)
UNITS = {ACTIVE_STACKS: "Count", MAX_ACTIVE_STACKS: "Count", WAITING_JOBS: "Count"}
UNITS.update(dict.fromkeys(FINISHED.values(), "Count"))
UNITS.update({phase.metric: "Seconds" for phase in PHASES})
METRIC_NAMES = tuple(UNITS)  # every metric pijobs emits


def emf_document(
    values: Mapping[str, float | Sequence[float]], *, stack: str, timestamp: datetime
) -> dict[str, Any]:
    """One EMF object: ``values`` (a number, or up to MAX_VALUES of them) under the Stack dimension."""
    unknown = sorted(set(values) - set(UNITS))
    if unknown:
        raise ValueError(f"not a pijobs metric: {', '.join(unknown)}")
    for name, value in values.items():
        if not isinstance(value, (int, float)) and not 0 < len(value) <= MAX_VALUES:
            raise ValueError(f"{name} has {len(value)} values (1..{MAX_VALUES})")
    return {
        "_aws": {
            "Timestamp": int(timestamp.timestamp() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [[STACK_DIMENSION]],
                    "Metrics": [{"Name": name, "Unit": UNITS[name]} for name in values],
                }
            ],
        },
        STACK_DIMENSION: stack,
        **{name: value if isinstance(value, (int, float)) else list(value) for name, value in values.items()},
    }


def finished_documents(
    jobs: Iterable[Mapping[str, Any]], *, stack: str, timestamp: datetime
) -> Iterator[dict[str, Any]]:
    """EMF objects for jobs that finished: a count per final state (zeros too, so a graph has points) and
    every phase's durations, MAX_VALUES to an object."""
    jobs = list(jobs)
    states = [job.get("status") for job in jobs]
    counts: dict[str, float | Sequence[float]] = {
        metric: states.count(state.value) for state, metric in FINISHED.items()
    }
    yield emf_document(counts, stack=stack, timestamp=timestamp)
    durations = {
        phase.metric: [d for job in jobs if (d := phase_seconds(job, phase)) is not None] for phase in PHASES
    }
    for start in range(0, max((len(v) for v in durations.values()), default=0), MAX_VALUES):
        chunk = {name: v[start : start + MAX_VALUES] for name, v in durations.items() if v[start:]}
        yield emf_document(chunk, stack=stack, timestamp=timestamp)


def phase_seconds(job: Mapping[str, Any], phase: Phase) -> float | None:
    """How long ``job`` spent in ``phase`` (None when it never reached the phase's end, e.g. cancelled)."""
    start, end = job.get(phase.start), job.get(phase.end)
    if not start or not end:
        return None
    seconds = (_parse(end) - _parse(start)).total_seconds()
    return seconds if seconds >= 0 else None


def destination(stream: TextIO | None = None) -> TextIO | None:
    """Where EMF lines go: ``stream`` if given, else stdout when Lambda runs the code (a function's output
    becomes its log, which CloudWatch Logs reads metrics from), else nowhere. Outside Lambda (the embedded
    stack runs the reaper inside ``pijobs up``) nothing would read them: they would only fill the terminal."""
    if stream is not None:
        return stream
    return sys.stdout if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else None


def emit(document: Mapping[str, Any], stream: TextIO) -> None:
    """Write one EMF object as a whole line: EMF wants nothing before or after the object."""
    stream.write(json.dumps(document, separators=(",", ":")) + "\n")
    stream.flush()


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
