"""Benchmark the embedded stack end to end, as a client sees it: latency of one job and fairness under load.

    python -m bench.pipeline [--scale 0.1] [--baseline dbeb8fc] [--latency-jobs 20] [--digits 15000]

- latency: jobs of ``--digits`` pi digits one after another; median and p95 from submit to SUCCEEDED, split
  into phases by the job record's timestamps (created_at, dispatched_at, started_at, finished_at) and the
  moment the client saw SUCCEEDED.
- fairness: tenant A submits 600 small jobs, then B 60 and C 6 (``--scale`` multiplies the counts), each with
  its own API key, with MaxActiveStacks 4: each tenant's wait (created -> dispatched), where C's last job
  finished in the order of completions, SQS SendMessage calls to the jobs queue and messages it delivered per
  job (counted in moto), jobs/s, the most job stacks live (not being deleted) and worker processes running at
  once (a worker still ending after its DeleteStack counts), and whether every job SUCCEEDED with exactly one
  result file.

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


@dataclass
class TreeRun:
    """What one tree's child measured."""

    label: str
    latency: list[Job] = field(default_factory=list)
    fairness: FairnessRun | None = None


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


def fairness_rows(run: FairnessRun) -> dict[str, float]:
    """The fairness figures by name (seconds, counts, ratios); NaN where nothing was measured."""
    jobs = run.jobs
    rows: dict[str, float] = {}
    for tenant in dict.fromkeys(j.tenant for j in jobs):
        waits = [
            s
            for s in (phase_seconds(j, "created_at", "dispatched_at") for j in jobs if j.tenant == tenant)
            if s
        ]
        rows[f"{tenant} wait median s"] = percentile(waits, 50)
        rows[f"{tenant} wait max s"] = max(waits, default=math.nan)
    finished = sorted((j for j in jobs if j.finished_at is not None), key=lambda j: j.finished_at or 0)
    ranks = [rank for rank, j in enumerate(finished, 1) if j.tenant == "C"]
    rows["C last completion rank"] = float(ranks[-1]) if ranks else math.nan
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
    fair = [fairness_rows(r.fairness) if r.fairness else {} for r in runs]
    names = list(dict.fromkeys(name for f in fair for name in f))
    for name in names:
        unit = " s" if name.endswith(" s") and not name.endswith("/ s") else ""
        row(
            f"fairness: {name.removesuffix(' s') if unit else name}",
            [f.get(name, math.nan) for f in fair],
            unit,
        )
    return "\n".join(lines)


# --- the child side: one tree's LocalStack in this process ------------------------------------------------


def _seconds(stamp: str | None) -> float | None:
    return None if not stamp else datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class Api:
    """The public HTTP API with one key; a throttled call (429) is tried again."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url.rstrip("/")
        self.key = key

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
            time.sleep(min(1.0, 0.05 * 2**attempt))
        raise RuntimeError(f"{method} {path}: throttled 50 times")

    def submit(self, function: str, params: dict[str, Any]) -> str:
        return str(self.call("POST", "/jobs", {"function": function, "params": params})["job_id"])

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
) -> FairnessRun:
    """Each tenant (own API key) submits its jobs, in the order given, then all are watched to the end."""
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
        )


def child(options: dict[str, Any]) -> dict[str, Any]:
    import pijobs

    log = options.get("log_prefix", "")
    print(f"{log}tree {Path(pijobs.__file__).resolve().parents[1]}", file=sys.stderr, flush=True)
    out: dict[str, Any] = {}
    if options["latency_jobs"]:
        started = time.monotonic()
        out["latency"] = [asdict(j) for j in run_latency(options["latency_jobs"], options["digits"])]
        print(f"{log}latency done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    if options["fairness"]:
        started = time.monotonic()
        run = run_fairness(options["counts"])
        out["fairness"] = {**asdict(run), "jobs": [asdict(j) for j in run.jobs]}
        print(f"{log}fairness done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
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
    run = TreeRun(label, latency=[Job(**j) for j in data.get("latency", [])])
    if "fairness" in data:
        fair = data["fairness"]
        run.fairness = FairnessRun(
            jobs=[Job(**j) for j in fair["jobs"]],
            queue_sends=fair["queue_sends"],
            queue_deliveries=fair["queue_deliveries"],
            peak_workers=fair["peak_workers"],
            peak_stacks=fair.get("peak_stacks", 0),
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
    }
    runs = bench(options, args.baseline, lambda line: print(line, file=sys.stderr, flush=True))
    print(f"fairness counts: {options['counts']}; latency: {args.latency_jobs} x {args.digits:,} digits")
    print()
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
