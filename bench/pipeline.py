"""Benchmark the embedded stack end to end, as a client sees it: latency of one job and fairness under load.

    python -m bench.pipeline [--scale 0.1] [--baseline dbeb8fc] [--latency-jobs 20] [--digits 15000]
                             [--cases latency,fairness,flood,starvation,parallel,scale]

- latency: jobs of ``--digits`` pi digits one after another; median and p95 from submit to SUCCEEDED, split
  into phases by the job record's timestamps (created_at, dispatched_at, started_at, finished_at) and the
  moment the client saw SUCCEEDED.
- fairness: tenant A submits 600 small jobs, then B 60 and C 6 (``--scale`` multiplies the counts), each with
  its own API key, with MaxActiveStacks 4: each tenant's wait (created -> dispatched), where C's last job
  finished in the order of completions, SQS SendMessage calls to the jobs queue and messages it delivered per
  job (counted in moto), jobs/s, the most job stacks live (not being deleted) and worker processes running at
  once (a worker still ending after its DeleteStack counts), and whether every job SUCCEEDED with exactly one
  result file. Its fairness report: per tenant p50/p95/max of the admission wait and of the bounded
  slowdown ``max(1, (wait + run) / max(10 s, run))``, and Jain's index of admissions / weight among the
  tenants while every one of them has a backlog (1: equal shares; 1/n: one tenant takes everything).
- flood: A floods 40 jobs from four threads at once, then B submits 4 and C 2, at 2 slots: the same report,
  A's refused submissions (503s the client had to repeat), and the rank of the small tenants' last
  admission among the admissions from B's first submission on (server-side times; first come, first
  served would make it the 32nd).
- starvation: A submits six sql queries that never end (a cross join of two ``range(100000000)``, with a
  timeout of 30 s where the tree offers one) at 4 slots; once one runs, B submits a 2,000-digit pi job:
  B's submit -> SUCCEEDED time (given up at 60 s) and when A's first query was stopped.
- parallel: one tenant submits 1,000 jobs (times ``--scale``) from 16 threads at once: refused submissions
  (503s) and the API's DynamoDB calls per job.
- scale: 100 waiting jobs of 10 tenants, 2,000 of 200 and 10,000 of 1,000 (times ``--scale``), then the
  dispatcher admits jobs as slots free: its DynamoDB reads and writes and SQS messages per admitted job
  (counted per call in the dispatcher's code, run in this process against moto without stacks: see
  ``run_scale``); and the capacity item's size as live jobs grow, up to the most MaxActiveStacks allows
  (DynamoDB refuses an item past 400 KB).

Each tree (``--baseline REF`` checked out with ``git worktree add`` into a temporary directory, and this one)
runs the scenarios in its own subprocess: this file run by path with that tree first on PYTHONPATH. The
child uses only what every version offers: LocalStack and LocalConfig, API keys, the HTTP API, and moto's
SQS backend, whose send and receive it counts. The table shows medians, baseline and current side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

# the client's, which the tree compared against has too (this file runs with either tree's imports)
from pijobs.client import TERMINAL_STATES as TERMINAL

REPO = Path(__file__).resolve().parents[1]
TENANTS = {"A": 600, "B": 60, "C": 6}
PHASES = (
    ("submit -> created", "submitted", "created_at"),
    ("created -> dispatched", "created_at", "dispatched_at"),
    ("dispatched -> started", "dispatched_at", "started_at"),
    ("started -> finished", "started_at", "finished_at"),
    ("finished -> seen", "finished_at", "seen"),
    ("submit -> SUCCEEDED (client)", "submitted", "seen"),
)
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class Job:
    """One job as the client saw it: wall-clock seconds (time.time(), the server's clock too)."""

    tenant: str
    job_id: str
    status: str
    submitted: float
    seen: float | None
    created_at: float | None
    dispatched_at: float | None
    started_at: float | None
    finished_at: float | None
    results: int = 1  # result files stored for it


@dataclass
class FairnessRun:
    jobs: list[Job]
    queue_sends: int
    queue_deliveries: int
    peak_workers: int
    peak_stacks: int = 0
    refused: int = 0  # submissions the service refused (503) and the client sent again


@dataclass
class TreeRun:
    """What one tree's child measured."""

    label: str
    latency: list[Job] = field(default_factory=list)
    fairness: FairnessRun | None = None
    flood: FairnessRun | None = None
    figures: dict[str, float] = field(default_factory=dict)  # starvation, parallel and scale, by name


# --- pure parts: percentiles and the table ----------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def phase_seconds(job: Job, start: str, end: str) -> float | None:
    begin, finish = getattr(job, start), getattr(job, end)
    return None if begin is None or finish is None else finish - begin


def latency_rows(jobs: list[Job]) -> dict[str, tuple[float, float]]:
    """Phase -> (median, p95) seconds over the SUCCEEDED jobs."""
    done = [j for j in jobs if j.status == "SUCCEEDED"]
    rows = {}
    for name, start, end in PHASES:
        values = [s for s in (phase_seconds(j, start, end) for j in done) if s is not None]
        rows[name] = (percentile(values, 50), percentile(values, 95))
    return rows


SLOWDOWN_FLOOR_S = 10.0  # bounded slowdown: runs shorter than this count as this long


def bounded_slowdown(wait: float, run: float) -> float:
    """``max(1, (wait + run) / max(10 s, run))``: how much longer than its own run a job took, short runs
    not magnified."""
    return max(1.0, (wait + run) / max(SLOWDOWN_FLOOR_S, run))


def jain_index(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all are equal, 1/n when one has everything; NaN for nothing."""
    total, squares = sum(values), sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares > 0 else math.nan


def backlogged_shares(jobs: Sequence[Job], weights: dict[str, float] | None = None) -> dict[str, float]:
    """Each tenant's admissions / weight while every tenant had a backlog: from the last tenant's first
    submission to the first tenant's last admission (server-side times). Empty if that window is empty."""
    tenants = sorted({j.tenant for j in jobs})
    created = {t: [j.created_at for j in jobs if j.tenant == t and j.created_at is not None] for t in tenants}
    admitted = {
        t: [j.dispatched_at for j in jobs if j.tenant == t and j.dispatched_at is not None] for t in tenants
    }
    if len(tenants) < 2 or not all(created.values()) or not all(admitted.values()):
        return {}
    start = max(min(times) for times in created.values())
    end = min(max(times) for times in admitted.values())
    if end <= start:
        return {}
    weights = weights or {}
    return {t: sum(1 for a in admitted[t] if start <= a <= end) / weights.get(t, 1.0) for t in tenants}


def last_small_admission_rank(jobs: Sequence[Job], small: Sequence[str], first: str) -> float:
    """The rank of the small tenants' last admission among all admissions from ``first``'s first
    submission on (server-side times); NaN if they were not all admitted."""
    arrived = min(
        (j.created_at for j in jobs if j.tenant == first and j.created_at is not None), default=None
    )
    smalls = [j for j in jobs if j.tenant in small]
    if arrived is None or not smalls or any(j.dispatched_at is None for j in smalls):
        return math.nan
    order = sorted(
        (j for j in jobs if (j.dispatched_at or 0.0) >= arrived), key=lambda j: j.dispatched_at or 0
    )
    return float(max(rank for rank, j in enumerate(order, 1) if j.tenant in small))


def fairness_rows(run: FairnessRun) -> dict[str, float]:
    """The fairness figures by name (seconds, counts, ratios); NaN where nothing was measured."""
    jobs = run.jobs
    rows: dict[str, float] = {}
    for tenant in dict.fromkeys(j.tenant for j in jobs):
        mine = [j for j in jobs if j.tenant == tenant]
        waits = [s for s in (phase_seconds(j, "created_at", "dispatched_at") for j in mine) if s]
        rows[f"{tenant} wait median s"] = percentile(waits, 50)
        rows[f"{tenant} wait p95 s"] = percentile(waits, 95)
        rows[f"{tenant} wait max s"] = max(waits, default=math.nan)
        slowdowns = [
            bounded_slowdown(wait, run)
            for wait, run in (
                (
                    phase_seconds(j, "created_at", "dispatched_at"),
                    phase_seconds(j, "dispatched_at", "finished_at"),
                )
                for j in mine
            )
            if wait is not None and run is not None
        ]
        rows[f"{tenant} bounded slowdown p50"] = percentile(slowdowns, 50)
        rows[f"{tenant} bounded slowdown p95"] = percentile(slowdowns, 95)
        rows[f"{tenant} bounded slowdown max"] = max(slowdowns, default=math.nan)
    shares = backlogged_shares(jobs)
    rows["Jain's index of admissions / weight while all wait"] = jain_index(list(shares.values()))
    finished = sorted((j for j in jobs if j.finished_at is not None), key=lambda j: j.finished_at or 0)
    ranks = [rank for rank, j in enumerate(finished, 1) if j.tenant == "C"]
    rows["C last completion rank"] = float(ranks[-1]) if ranks else math.nan
    rows["B and C last admission rank from B's first"] = last_small_admission_rank(jobs, ("B", "C"), "B")
    rows["submissions refused (503)"] = float(run.refused)
    rows["jobs"] = float(len(jobs))
    rows["queue sends / job"] = run.queue_sends / len(jobs) if jobs else math.nan
    rows["dispatcher records / job"] = run.queue_deliveries / len(jobs) if jobs else math.nan
    starts = [j.created_at for j in jobs if j.created_at is not None]
    ends = [j.finished_at for j in jobs if j.finished_at is not None]
    span = max(ends) - min(starts) if starts and ends else 0.0
    rows["jobs / s"] = len(ends) / span if span > 0 else math.nan
    rows["peak live job stacks"] = float(run.peak_stacks)
    rows["peak live workers"] = float(run.peak_workers)
    lost = sum(1 for j in jobs if j.status != "SUCCEEDED" or j.results != 1)
    rows["jobs lost or not exactly one result"] = float(lost)
    return rows


def _cell(value: float, unit: str = "") -> str:
    if math.isnan(value):
        return "-"
    if value == int(value) and not unit:
        return f"{int(value):,}"
    return f"{value:.3f}{unit}" if abs(value) < 10 else f"{value:,.1f}{unit}"


def _ratio(current: float, baseline: float) -> str:
    if math.isnan(current) or math.isnan(baseline) or baseline == 0:
        return "-"
    return f"{current / baseline:.2f}"


def table(runs: list[TreeRun]) -> str:
    """Markdown: one row per figure, one column per tree, and current / baseline when there are two."""
    header = ["figure", *(r.label for r in runs)]
    if len(runs) == 2:
        header.append(f"{runs[1].label} / {runs[0].label}")
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]

    def row(name: str, values: list[float], unit: str = "") -> None:
        cells = [_cell(v, unit) for v in values]
        if len(values) == 2:
            cells.append(_ratio(values[1], values[0]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    if any(r.latency for r in runs):
        tables = [latency_rows(r.latency) for r in runs]
        count = max(len(r.latency) for r in runs)
        for name, _, _ in PHASES:
            row(f"latency ({count} jobs): {name}, median", [t[name][0] for t in tables], " s")
            row(f"latency ({count} jobs): {name}, p95", [t[name][1] for t in tables], " s")
    for case in ("fairness", "flood"):
        fair = [fairness_rows(getattr(r, case)) if getattr(r, case) else {} for r in runs]
        for name in dict.fromkeys(name for f in fair for name in f):
            unit = " s" if name.endswith(" s") and not name.endswith("/ s") else ""
            row(
                f"{case}: {name.removesuffix(' s') if unit else name}",
                [f.get(name, math.nan) for f in fair],
                unit,
            )
    for name in dict.fromkeys(name for r in runs for name in r.figures):
        unit = " s" if name.endswith(" s") else ""
        row(name.removesuffix(" s") if unit else name, [r.figures.get(name, math.nan) for r in runs], unit)
    return "\n".join(lines)


# --- the child side: one tree's LocalStack in this process ------------------------------------------------


def _seconds(stamp: str | None) -> float | None:
    return None if not stamp else datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class Api:
    """The public HTTP API with one key; a throttled call (429) is tried again."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.refused = 0  # 503s: the service gave up (e.g. "too many jobs submitted at once by this key")
        self._lock = threading.Lock()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(50):
            request = urllib.request.Request(self.url + path, data=data, method=method)
            request.add_header("x-api-key", self.key)
            request.add_header("content-type", "application/json")
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return dict(json.loads(response.read()))
            except urllib.error.HTTPError as exc:
                if exc.code not in (429, 503):
                    raise RuntimeError(f"{method} {path}: {exc.code} {exc.read()[:300]!r}") from exc
                if exc.code == 503:
                    with self._lock:
                        self.refused += 1
            time.sleep(min(1.0, 0.05 * 2**attempt))
        raise RuntimeError(f"{method} {path}: throttled 50 times")

    def submit(self, function: str, params: dict[str, Any]) -> str:
        return str(self.call("POST", "/jobs", {"function": function, "params": params})["job_id"])

    def submit_many(self, function: str, params: dict[str, Any], count: int, threads: int) -> list[str]:
        """``count`` jobs sent from ``threads`` threads at once, as a parallel client sends them."""
        jobs: list[str] = []
        lock, start = threading.Lock(), threading.Barrier(threads)
        shares = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]

        def send(share: int) -> None:
            start.wait()
            for _ in range(share):
                job_id = self.submit(function, params)
                with lock:
                    jobs.append(job_id)

        workers = [threading.Thread(target=send, args=(share,)) for share in shares]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return jobs

    def statuses(self) -> dict[str, str]:
        """job id -> status of every job of this key."""
        found: dict[str, str] = {}
        token = None
        while True:
            suffix = f"&next={urllib.parse.quote(token)}" if token else ""
            page = self.call("GET", "/jobs?limit=100" + suffix)
            found.update({j["job_id"]: j["status"] for j in page.get("jobs", [])})
            token = page.get("next")
            if not token:
                return found


def job_from(view: dict[str, Any], tenant: str, submitted: float, seen: float | None, results: int) -> Job:
    return Job(
        tenant=tenant,
        job_id=view["job_id"],
        status=view["status"],
        submitted=submitted,
        seen=seen,
        created_at=_seconds(view.get("created_at")),
        dispatched_at=_seconds(view.get("dispatched_at")),
        started_at=_seconds(view.get("started_at")),
        finished_at=_seconds(view.get("finished_at")),
        results=results,
    )


class SqsCounter:
    """Counts messages sent to and received from each queue in moto's SQS backend (in this process)."""

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}
        self.received: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def installed(self) -> Iterator[SqsCounter]:
        from moto.sqs.models import SQSBackend

        send, receive = SQSBackend.send_message, SQSBackend.receive_message
        counter = self

        def counted_send(backend: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
            with counter._lock:
                counter.sent[queue_name] = counter.sent.get(queue_name, 0) + 1
            return send(backend, queue_name, *args, **kwargs)

        def counted_receive(backend: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
            messages = receive(backend, queue_name, *args, **kwargs)
            with counter._lock:
                counter.received[queue_name] = counter.received.get(queue_name, 0) + len(messages)
            return messages

        SQSBackend.send_message = counted_send  # type: ignore[method-assign,assignment]
        SQSBackend.receive_message = counted_receive  # type: ignore[method-assign,assignment]
        try:
            yield self
        finally:
            SQSBackend.send_message = send  # type: ignore[method-assign,assignment]
            SQSBackend.receive_message = receive  # type: ignore[method-assign,assignment]


def _local_stack(**options: Any) -> Any:
    """The tree's LocalStack with the constructor options every version has."""
    from pijobs.local.stack import LocalConfig, LocalStack

    # The throttle is the usage plan's, not the pipeline's: high enough that it never shapes the run.
    config = LocalConfig(throttle_rate=10_000.0, throttle_burst=10_000, **options)
    return LocalStack(config)


def _result_counts(stack: Any) -> dict[str, int]:
    """Job id -> result files stored for it (keys results/<owner>/<job id>/<file>)."""
    s3, counts = stack.client("s3"), dict[str, int]()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.outputs["ResultsBucket"]):
        for item in page.get("Contents", []):
            parts = item["Key"].split("/")
            if len(parts) >= 3:
                counts[parts[-2]] = counts.get(parts[-2], 0) + 1
    return counts


def _live_job_stacks(cfn: Any) -> int:
    """Job stacks that exist and are not being deleted (what MaxActiveStacks limits)."""
    live = ["CREATE_IN_PROGRESS", "CREATE_COMPLETE", "UPDATE_IN_PROGRESS", "UPDATE_COMPLETE"]
    count = 0
    for page in cfn.get_paginator("list_stacks").paginate(StackStatusFilter=live):
        count += sum(1 for s in page.get("StackSummaries", []) if s["StackName"].startswith("pijob-"))
    return count


def run_latency(jobs: int, digits: int, poll_s: float = 0.02) -> list[Job]:
    """``jobs`` pi jobs one after another, each watched until terminal."""
    measured = []
    with _local_stack() as stack:
        api = Api(stack.api_url, stack.api_key)
        api.submit("pi", {"digits": 100})  # warm-up, not measured: the first call of each handler
        _wait_terminal(api, list(api.statuses()), timeout_s=120)
        for _ in range(jobs):
            submitted = time.time()
            job_id = api.submit("pi", {"digits": digits})
            while True:
                view = api.call("GET", f"/jobs/{job_id}")
                if view["status"] in TERMINAL:
                    break
                time.sleep(poll_s)
            measured.append(job_from(view, "latency", submitted, time.time(), 1))
        counts = _result_counts(stack)
    return [Job(**{**asdict(j), "results": counts.get(j.job_id, 0)}) for j in measured]


def _wait_terminal(api: Api, job_ids: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = api.statuses()
        if all(statuses.get(job_id) in TERMINAL for job_id in job_ids):
            return
        if time.monotonic() > deadline:
            raise RuntimeError("jobs not finished in time")
        time.sleep(0.5)


def run_fairness(
    counts: dict[str, int],
    function: str = "pi",
    params: dict[str, Any] | None = None,
    max_active_stacks: int = 4,
    timeout_s: float = 3600.0,
    threads: dict[str, int] | None = None,
) -> FairnessRun:
    """Each tenant (own API key) submits its jobs, in the order given (from ``threads[tenant]`` threads at
    once, else one after another), then all are watched to the end."""
    params = params if params is not None else {"digits": 100}
    with SqsCounter().installed() as counter, _local_stack(max_active_stacks=max_active_stacks) as stack:
        queue_name = stack.outputs["QueueUrl"].rsplit("/", 1)[1]
        apis = {tenant: Api(stack.api_url, stack.create_api_key(f"bench-{tenant}")[1]) for tenant in counts}
        peak, sampling = [0, 0], threading.Event()

        def sample() -> None:
            cfn, looked = stack.client("cloudformation"), 0.0
            while not sampling.wait(0.05):
                peak[0] = max(peak[0], len(stack.runner.running()))
                if time.monotonic() - looked > 0.25:  # CloudFormation calls queue behind moto's lock
                    looked = time.monotonic()
                    peak[1] = max(peak[1], _live_job_stacks(cfn))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        submitted: dict[str, tuple[str, float]] = {}
        for tenant, count in counts.items():
            if (threads or {}).get(tenant, 1) > 1:
                at = time.time()
                for job_id in apis[tenant].submit_many(function, params, count, (threads or {})[tenant]):
                    submitted[job_id] = (tenant, at)
                continue
            for _ in range(count):
                at = time.time()
                submitted[apis[tenant].submit(function, params)] = (tenant, at)
        deadline = time.monotonic() + timeout_s
        seen: dict[str, float] = {}
        while len(seen) < len(submitted):
            if time.monotonic() > deadline:
                raise RuntimeError(f"fairness run: {len(submitted) - len(seen)} jobs not finished in time")
            for api in apis.values():
                now = time.time()
                for job_id, status in api.statuses().items():
                    if status in TERMINAL and job_id in submitted:
                        seen.setdefault(job_id, now)
            time.sleep(0.5)
        sampling.set()
        sampler.join()
        results = _result_counts(stack)
        jobs = []
        for job_id, (tenant, at) in submitted.items():
            view = apis[tenant].call("GET", f"/jobs/{job_id}")
            jobs.append(job_from(view, tenant, at, seen[job_id], results.get(job_id, 0)))
        return FairnessRun(
            jobs=jobs,
            queue_sends=counter.sent.get(queue_name, 0),
            queue_deliveries=counter.received.get(queue_name, 0),
            peak_workers=peak[0],
            peak_stacks=peak[1],
            refused=sum(api.refused for api in apis.values()),
        )


# --- the other cases: a flood at two slots, runaway queries, parallel submission, the cost at scale --------

FLOOD = {"A": 40, "B": 4, "C": 2}
CASES = ("latency", "fairness", "flood", "starvation", "parallel", "scale")
RUNAWAY = "SELECT count(*) FROM range(100000000) a, range(100000000) b"  # would run for days


def run_flood() -> FairnessRun:
    """A floods 40 jobs from four threads at once, then B submits 4 and C 2, at 2 slots."""
    return run_fairness(FLOOD, max_active_stacks=2, threads={"A": 4})


def run_starvation(cutoff_s: float = 60.0) -> dict[str, float]:
    """Six endless queries of A at 4 slots; once one runs, B's small pi job. NaN where the cutoff passed."""
    from pijobs.client import PijobsClient

    figures: dict[str, float] = {}
    with _local_stack(max_active_stacks=4) as stack, tempfile.TemporaryDirectory() as tmp:
        a_key, b_key = (stack.create_api_key(f"bench-{name}")[1] for name in ("runaway", "small"))
        a, b = Api(stack.api_url, a_key), Api(stack.api_url, b_key)
        table = Path(tmp) / "t.csv"
        table.write_text("x\n1\n")
        upload = PijobsClient(stack.api_url, a_key).upload_file(table)
        params: dict[str, Any] = {"query": RUNAWAY, "inputs": {"t": upload["upload_id"]}}
        if "timeout_seconds" in a.call("GET", "/functions/sql")["parameters"]["properties"]:
            params["timeout_seconds"] = 30
        runaway = [a.submit("sql", params) for _ in range(6)]
        try:
            deadline = time.monotonic() + 120
            while "RUNNING" not in a.statuses().values():
                if time.monotonic() > deadline:
                    raise RuntimeError("starvation run: none of A's queries started")
                time.sleep(0.2)
            submitted, a_live = time.time(), 0
            small = b.submit("pi", {"digits": 2000})
            while b.call("GET", f"/jobs/{small}")["status"] not in TERMINAL:
                a_live = max(
                    a_live, sum(1 for s in a.statuses().values() if s in ("PROVISIONING", "RUNNING"))
                )
                if time.time() - submitted > cutoff_s:
                    break
                time.sleep(0.2)
            done = b.call("GET", f"/jobs/{small}")
            waited = time.time() - submitted
            figures["starvation: B's small job submit -> SUCCEEDED s"] = (
                waited if done["status"] == "SUCCEEDED" else math.nan
            )
            figures["starvation: B's small job done within 60 s (1 yes, 0 no)"] = float(
                done["status"] == "SUCCEEDED"
            )
            figures["starvation: A's live stacks at most, of 4"] = float(a_live)
            stop = time.monotonic() + cutoff_s
            first = min(
                (a.call("GET", f"/jobs/{j}") for j in runaway), key=lambda job: job.get("started_at") or "~"
            )
            while first["status"] not in TERMINAL and time.monotonic() < stop:
                time.sleep(0.5)
                first = a.call("GET", f"/jobs/{first['job_id']}")
            ran = phase_seconds(job_from(first, "A", 0.0, None, 0), "started_at", "finished_at")
            figures["starvation: A's first runaway query stopped after s"] = (
                ran if ran is not None else math.nan
            )
        finally:
            for job_id in runaway:
                with contextlib.suppress(RuntimeError):
                    a.call("DELETE", f"/jobs/{job_id}")
    return figures


class CallCounter:
    """AWS calls made inside the API's and the dispatcher's handlers in this process, by role and kind:
    DynamoDB reads (a GetItem, a Query, a Scan, each key of a BatchGetItem), writes (a PutItem, UpdateItem or
    DeleteItem, each item of a TransactWriteItems), SQS messages sent and stacks created. Workers' calls are
    not counted: they are the job's, not admission's."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._role = threading.local()

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()

    def get(self, role: str, kind: str) -> int:
        with self._lock:
            return self.counts.get((role, kind), 0)

    @staticmethod
    def kind(operation: str, params: dict[str, Any]) -> tuple[str, int]:
        if operation in ("GetItem", "Query", "Scan"):
            return "reads", 1
        if operation == "BatchGetItem":
            return "reads", sum(len(t.get("Keys", [])) for t in params.get("RequestItems", {}).values())
        if operation in ("PutItem", "UpdateItem", "DeleteItem"):
            return "writes", 1
        if operation == "TransactWriteItems":
            return "writes", len(params.get("TransactItems", []))
        if operation == "SendMessage":
            return "messages", 1
        if operation == "CreateStack":
            return "stacks", 1
        return "", 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[CallCounter]:
        """Count the calls made inside ``role`` (in any thread of this process)."""
        from botocore.client import BaseClient

        make_call, counter = BaseClient._make_api_call, self

        def counted(client: Any, operation: str, params: dict[str, Any]) -> Any:
            role = getattr(counter._role, "name", None)
            if role:
                kind, n = counter.kind(operation, params)
                if kind:
                    with counter._lock:
                        counter.counts[(role, kind)] = counter.counts.get((role, kind), 0) + n
            return make_call(client, operation, params)

        BaseClient._make_api_call = counted  # type: ignore[method-assign]
        try:
            yield self
        finally:
            BaseClient._make_api_call = make_call  # type: ignore[method-assign]

    @contextlib.contextmanager
    def role(self, name: str) -> Iterator[None]:
        """The calls this thread makes meanwhile are ``name``'s."""
        self._role.name = name
        try:
            yield
        finally:
            self._role.name = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[CallCounter]:
        """Count while the stack started inside runs (its handlers are looked up when it starts)."""
        from pijobs.api_handler import handler as api_handler
        from pijobs.dispatcher import handler as dispatcher

        originals = (api_handler.lambda_handler, dispatcher.lambda_handler)
        counter = self

        def as_role(handler: Callable[[Any, Any], Any], role: str) -> Callable[[Any, Any], Any]:
            def run(event: Any, context: Any) -> Any:
                with counter.role(role):
                    return handler(event, context)

            return run

        api_handler.lambda_handler = as_role(originals[0], "api")
        dispatcher.lambda_handler = as_role(originals[1], "dispatcher")
        try:
            with self.counting():
                yield self
        finally:
            api_handler.lambda_handler, dispatcher.lambda_handler = originals


def run_parallel(jobs: int, threads: int = 16) -> dict[str, float]:
    """One tenant submits ``jobs`` jobs from ``threads`` threads at once."""
    with CallCounter().installed() as calls, _local_stack(max_active_stacks=1) as stack:
        key_id, key = stack.create_api_key("bench-parallel")
        api = Api(stack.api_url, key)
        started = time.monotonic()
        ids = api.submit_many("pi", {"digits": 10}, jobs, threads)
        elapsed = time.monotonic() - started
        tags = _wait_tags(stack, key_id)
        sent = max(1, calls.get("api", "messages"))
        return {
            f"parallel: jobs submitted by {threads} threads": float(len(set(ids))),
            "parallel: submissions refused (503)": float(api.refused),
            "parallel: parked jobs sharing a place": float(len(tags) - len(set(tags))),
            "parallel: submissions per second": len(ids) / elapsed,
            "parallel: API DynamoDB reads / job": calls.get("api", "reads") / sent,
            "parallel: API DynamoDB writes / job": calls.get("api", "writes") / sent,
        }


def _wait_tags(stack: Any, owner: str) -> list[str]:
    """The tags of ``owner``'s parked jobs (a scan: the benchmark's own look, not the service's)."""
    tags = []
    for page in (
        stack.client("dynamodb")
        .get_paginator("scan")
        .paginate(
            TableName=stack.outputs["TableName"],
            FilterExpression="#owner = :owner AND attribute_exists(wait_tag)",
            ExpressionAttributeNames={"#owner": "owner"},
            ExpressionAttributeValues={":owner": {"S": owner}},
        )
    ):
        tags.extend(item["wait_tag"]["N"] for item in page.get("Items", []))
    return tags


class CountingBackend:
    """The compute port without compute: the dispatcher's ``launch`` is recorded and nothing starts.
    Admission, the slot, the transition and the stack's parameters are the real code's."""

    def __init__(self) -> None:
        self.launched: list[str] = []

    def launch(self, request: Any) -> Any:
        from pijobs.shared.compute import Launched

        self.launched.append(request.job_id)
        return Launched(handle=f"pijob-{request.job_id}", infrastructure_id=f"stack/{request.job_id}")

    def describe(self) -> list[Any]:
        return []

    def destroy(self, job_id: str, attempt: int | None) -> None:
        return None


@contextlib.contextmanager
def _in_process_aws(max_active_stacks: int) -> Iterator[dict[str, str]]:
    """moto in this process (no server, no stand-ins, no workers) with the jobs table as the template
    declares it and the jobs queue; the handlers' environment points at them."""
    import boto3
    from moto import mock_aws

    from pijobs.local.cfn import load_template, resources_of_type

    properties = resources_of_type(load_template(REPO / "infra" / "primary.yaml"), "AWS::DynamoDB::Table")[
        "JobsTable"
    ]
    schema = {
        name: properties[name] for name in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes")
    }
    saved = dict(os.environ)
    try:
        os.environ.pop("AWS_ENDPOINT_URL", None)
        os.environ.update(LOCAL_CREDENTIALS)
        with mock_aws():
            boto3.client("dynamodb").create_table(
                TableName="pijobs-jobs", BillingMode="PAY_PER_REQUEST", **schema
            )
            queue_url = boto3.client("sqs").create_queue(QueueName="pijobs-jobs")["QueueUrl"]
            env = {
                "PIJOBS_TABLE_NAME": "pijobs-jobs",
                "PIJOBS_QUEUE_URL": queue_url,
                "PIJOBS_RESULTS_BUCKET": "pijobs-results",
                "PIJOBS_ARTIFACTS_BUCKET": "pijobs-artifacts",
                "PIJOBS_ARTIFACTS_URL": "https://pijobs-artifacts.s3.amazonaws.com/",
                "PIJOBS_MAX_ACTIVE_STACKS": str(max_active_stacks),
                "PIJOBS_ADMISSION_TICK_SECONDS": "1",
            }
            os.environ.update(env)
            yield env
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_scale(waiting: int, tenants: int, admissions: int, max_active_stacks: int = 4) -> dict[str, float]:
    """The dispatcher's cost per admitted job with ``waiting`` jobs of ``tenants`` tenants parked.

    In this process against moto, without a server, stacks or workers: on the embedded stack moto's
    server grew past 5 GB at 10,000 jobs, because its TransactWriteItems deep-copied the whole table for a
    rollback and listed the copy for its dashboard, and the stack admitted and ran jobs (each admission and
    each status change a transaction) while the backlog was being written (pijobs/local/moto_server.py and
    moto_transactions.py now stop both; this process uses them too). The jobs are parked as the
    API parks parallel submissions at clock 0 (each tenant's tags 1, 2, ...; JobStore's own item, written
    in batches: the API's five calls a job took 10 minutes for 10,000 here), and one more job is submitted
    through the API's ``submit_job``. Its message, handled by the dispatcher's ``dispatch``, starts the
    admissions; then the ticks admit into the slots that finishing jobs free (each admitted job is cancelled
    through the lifecycle, which releases its slot: not counted). The compute port only counts launches.
    Counted, in the dispatcher only: DynamoDB reads and writes, SQS messages sent.
    """
    import gc
    from dataclasses import replace

    from pijobs.api_handler import handler as api_handler
    from pijobs.api_handler.service import parse_submission, submit_job
    from pijobs.dispatcher import handler as dispatcher
    from pijobs.dispatcher.service import dispatch
    from pijobs.local import moto_transactions
    from pijobs.local.moto_server import forget_model_copies
    from pijobs.shared import aws
    from pijobs.shared.logs import configure_logging
    from pijobs.shared.models import JobMessage
    from pijobs.shared.status import JobStatus

    configure_logging()
    moto_transactions.install()  # as the embedded stack runs moto: a transaction copies only its items
    counter = CallCounter()
    with counter.counting(), _in_process_aws(max_active_stacks) as env:
        for cached in (aws._cached_client, api_handler.services, dispatcher.services):
            cached.cache_clear()
        api = api_handler.services()
        backend = CountingBackend()
        services = replace(dispatcher.services(), compute=backend)
        submission = parse_submission(api.functions, {"function": "pi", "params": {"digits": 10}})
        _park(api, submission, waiting, tenants)
        sqs = aws.client("sqs")
        first, _ = submit_job(api, "tenant-late", submission)
        counter.reset()
        message = JobMessage(job_id=first.job_id, function="pi")
        deadline = time.monotonic() + 120 + 5 * admissions
        while len(backend.launched) < admissions:
            if time.monotonic() > deadline:
                raise RuntimeError(f"scale run: {len(backend.launched)} of {admissions} admitted")
            if message is not None:
                with counter.role("dispatcher"):
                    dispatch(services, message)
            for job_id in backend.launched[-max_active_stacks:]:  # they finish: their slots free
                job = services.store.get(job_id)
                if job.status.is_live:
                    services.lifecycle.transition(job, JobStatus.CANCELLED)
            forget_model_copies()  # moto lists every item it made, copies too (local/moto_server.py)
            gc.collect()
            message = _next_tick(sqs, env["PIJOBS_QUEUE_URL"])
        admitted = len(backend.launched)
        case = f"scale ({waiting:,} waiting of {tenants:,} tenants)"
        figures = {
            f"{case}: {kind} / admitted job": counter.get("dispatcher", kind) / admitted
            for kind in ("reads", "writes", "messages")
        }
    return figures


def _park(api: Any, submission: Any, waiting: int, tenants: int) -> None:
    """``waiting`` jobs of ``tenants`` tenants parked as parallel submissions at clock 0 leave them."""
    from pijobs.shared import aws
    from pijobs.shared.functions import job_deadline
    from pijobs.shared.models import JobRecord, isoformat, new_job_id, utcnow
    from pijobs.shared.status import JobStatus
    from pijobs.shared.tenants import tenant_key

    now = isoformat(utcnow())
    owners = [f"tenant{n:05d}" for n in range(tenants)]
    params = submission.params.model_dump(mode="json")
    items = [
        api.store.item(
            JobRecord(
                job_id=new_job_id(),
                owner=owners[i % tenants],
                function=submission.function.name,
                version=submission.function.version,
                params=params,
                status=JobStatus.QUEUED,
                created_at=now,
                updated_at=now,
                deadline_seconds=job_deadline(submission.function, submission.params),
                wait_tag=float(i // tenants + 1),
            )
        )
        for i in range(waiting)
    ]
    items += [
        {**tenant_key(owner), "last_tag": {"N": str(math.ceil((waiting - n) / tenants))}}
        for n, owner in enumerate(owners)
    ]
    table, dynamodb = api.settings.table_name, aws.client("dynamodb")
    for start in range(0, len(items), 25):  # BatchWriteItem takes 25 items
        request = {table: [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]}
        while request:
            request = dynamodb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}


def _next_tick(sqs: Any, queue_url: str) -> Any:
    """The next admission tick from the queue (delayed by AdmissionTickSeconds), None if none comes."""
    from pijobs.shared.models import JobMessage

    received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=5)
    for message in received.get("Messages", []):
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return JobMessage.model_validate_json(message["Body"])
    return None


def capacity_sizes(tenants: int) -> dict[str, float]:
    """The capacity item's size as live jobs grow, each of its own tenant (the largest the item gets for
    that many live jobs) and at the most allowed of ``tenants`` tenants; where it would reach DynamoDB's
    limit; and the most live jobs MaxActiveStacks allows."""
    from pijobs.shared.capacity import ITEM_LIMIT_BYTES, MAX_LIVE_JOBS, capacity_item, item_size

    def size(live: int, owners: int) -> int:
        return item_size(capacity_item(live, tenants=owners))

    figures = {
        f"capacity item bytes at {live:,} live jobs, one tenant each": float(size(live, live))
        for live in (10, 100, 1_000, MAX_LIVE_JOBS)
    }
    figures[f"capacity item bytes at {MAX_LIVE_JOBS:,} live jobs of {tenants:,} tenants"] = float(
        size(MAX_LIVE_JOBS, tenants)
    )
    per_job = (size(2_000, 2_000) - size(1_000, 1_000)) / 1_000  # it grows linearly with its holders
    base = size(1_000, 1_000) - 1_000 * per_job
    figures["capacity item: live jobs (one tenant each) at DynamoDB's 400 KB"] = (
        ITEM_LIMIT_BYTES - base
    ) / per_job
    figures["capacity item: most live jobs allowed (MaxActiveStacks' MaxValue)"] = float(MAX_LIVE_JOBS)
    return figures


def _scale_runs(scale: float) -> dict[str, float]:
    """The scale run with 100, 2,000 and 10,000 waiting jobs (times ``scale``): what admitting a job costs
    should not grow with the backlog."""
    admissions = max(20, round(100 * scale))
    figures: dict[str, float] = {}
    for waiting, tenants in ((100, 10), (2_000, 200), (10_000, 1_000)):
        started = time.monotonic()
        figures |= run_scale(max(100, round(waiting * scale)), max(10, round(tenants * scale)), admissions)
        print(f"scale {waiting} done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return figures | capacity_sizes(max(10, round(1_000 * scale)))


def child(options: dict[str, Any]) -> dict[str, Any]:
    import pijobs

    log = options.get("log_prefix", "")
    print(f"{log}tree {Path(pijobs.__file__).resolve().parents[1]}", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"figures": {}}
    cases = options.get("cases", ["latency", "fairness"])
    if options["latency_jobs"] and "latency" in cases:
        started = time.monotonic()
        out["latency"] = [asdict(j) for j in run_latency(options["latency_jobs"], options["digits"])]
        print(f"{log}latency done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    if options["fairness"] and "fairness" in cases:
        started = time.monotonic()
        run = run_fairness(options["counts"])
        out["fairness"] = {**asdict(run), "jobs": [asdict(j) for j in run.jobs]}
        print(f"{log}fairness done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    scale = options.get("scale", 1.0)
    for case, measure in (
        ("flood", run_flood),
        ("starvation", run_starvation),
        ("parallel", lambda: run_parallel(max(16, round(1_000 * scale)))),
        ("scale", lambda: _scale_runs(scale)),
    ):
        if case not in cases:
            continue
        started = time.monotonic()
        result = measure()
        if isinstance(result, FairnessRun):
            out[case] = {**asdict(result), "jobs": [asdict(j) for j in result.jobs]}
        else:
            out["figures"].update(result)
        print(f"{log}{case} done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return out


# --- the parent side: one subprocess per tree ------------------------------------------------------------


def scaled(counts: dict[str, int], scale: float) -> dict[str, int]:
    """Each tenant's count times ``scale``, at least one job."""
    return {tenant: max(1, round(count * scale)) for tenant, count in counts.items()}


def run_tree(label: str, tree: Path, options: dict[str, Any]) -> TreeRun:
    """The scenarios in a subprocess whose imports come from ``tree``."""
    with tempfile.NamedTemporaryFile("r", suffix=".json", prefix="pipeline-bench-") as out:
        env = {
            **os.environ,
            **LOCAL_CREDENTIALS,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])),
            "PIJOBS_LOG_LEVEL": "ERROR",
        }
        env.pop("AWS_ENDPOINT_URL", None)
        payload = json.dumps({**options, "log_prefix": f"[{label}] ", "out": out.name})
        command = [sys.executable, str(Path(__file__).resolve()), "--child", payload]
        subprocess.run(command, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
        data = json.load(out)
    run = TreeRun(label, latency=[Job(**j) for j in data.get("latency", [])], figures=data.get("figures", {}))
    for case in ("fairness", "flood"):
        if case in data:
            fair = data[case]
            setattr(
                run,
                case,
                FairnessRun(
                    jobs=[Job(**j) for j in fair["jobs"]],
                    queue_sends=fair["queue_sends"],
                    queue_deliveries=fair["queue_deliveries"],
                    peak_workers=fair["peak_workers"],
                    peak_stacks=fair.get("peak_stacks", 0),
                    refused=fair.get("refused", 0),
                ),
            )
    return run


@contextlib.contextmanager
def checkout(ref: str) -> Iterator[Path]:
    """``ref`` of this repository in a temporary worktree, removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="pipeline-bench-baseline-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(directory), ref], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(directory)], check=False)


def bench(options: dict[str, Any], baseline: str | None, log: Callable[[str], None]) -> list[TreeRun]:
    runs = []
    if baseline:
        with checkout(baseline) as tree:
            log(f"baseline {baseline} in {tree}")
            runs.append(run_tree(baseline, tree, options))
    runs.append(run_tree("current", REPO, options))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the fairness run's job counts")
    parser.add_argument("--latency-jobs", type=int, default=20, help="latency jobs (0: skip)")
    parser.add_argument("--digits", type=int, default=15_000, help="digits of each latency job")
    parser.add_argument("--no-fairness", action="store_true", help="skip the fairness run")
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated, default all: {','.join(CASES)} (--scale shrinks fairness, parallel, scale)",
    )
    parser.add_argument("--baseline", metavar="REF", help="also run an older git ref, side by side")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        options = json.loads(args.child)
        result = child(options)
        Path(options["out"]).write_text(json.dumps(result))
        return 0
    options = {
        "latency_jobs": args.latency_jobs,
        "digits": args.digits,
        "fairness": not args.no_fairness,
        "counts": scaled(TENANTS, args.scale),
        "cases": [case.strip() for case in args.cases.split(",") if case.strip()],
        "scale": args.scale,
    }
    unknown = sorted(set(options["cases"]) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    runs = bench(options, args.baseline, lambda line: print(line, file=sys.stderr, flush=True))
    print(f"fairness counts: {options['counts']}; latency: {args.latency_jobs} x {args.digits:,} digits")
    print()
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
