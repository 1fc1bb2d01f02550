"""Benchmark the sql function on the embedded stack against the same query in-process.

    python -m bench.sql [--rows 10000000] [--threads N]

Writes a CSV of ``--rows`` rows (a group key, a number, a timestamp; about 27 bytes a row, so some 270 MB at
the default 10 million) into a temporary directory, uploads it to a fresh embedded stack
(``pijobs.local.stack.LocalStack``) as a customer does (sha256, POST /uploads, the presigned POST, wait for
AVAILABLE), runs a group-by aggregate over it as an ``sql`` job, and prints one table:

- the job's time from the start of the upload to SUCCEEDED, by phase: upload (hash + POST), verify (until
  the record says AVAILABLE), queued (created -> dispatched), provisioning (dispatched -> started), input
  download, query and result upload (from the worker's own log events), finish (result stored -> SUCCEEDED);
- the same query in DuckDB in this process over the same file, and the same aggregate in polars or pandas
  when one is installed;
- the ratio of the job's running phase (download + query + result upload) to in-process DuckDB, and the
  worker's peak memory: its own ``ru_maxrss`` (logged in ``job_finished``), and ``VmHWM`` from
  ``/proc/<pid>/status`` sampled while it ran.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

QUERY = (
    "SELECT k, count(*) AS n, sum(v) AS total, avg(v) AS mean, min(ts) AS first, max(ts) AS last "
    "FROM t GROUP BY k ORDER BY k"
)
RUNNING_TARGET = 1.25  # the job's running phase over in-process DuckDB
MEMORY_TARGET = 2 << 30
GROUPS = 1000


# --- pure parts -------------------------------------------------------------------------------------------
def seconds(stamp: str | None) -> float | None:
    if not stamp:
        return None
    # Python 3.10's fromisoformat takes a fraction of exactly 3 or 6 digits.
    text = re.sub(
        r"\.(\d+)", lambda m: "." + (m.group(1) + "000000")[:6], stamp.replace("Z", "+00:00"), count=1
    )
    return datetime.fromisoformat(text).timestamp()


def worker_events(lines: Iterable[str], job_id: str) -> dict[str, float]:
    """The worker's log events for ``job_id`` (JSON lines): event -> time of its last occurrence, plus
    ``peak_rss_bytes`` from ``job_finished``."""
    found: dict[str, float] = {}
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict) or event.get("job_id") != job_id or "timestamp" not in event:
            continue
        found[str(event.get("event"))] = seconds(str(event["timestamp"])) or 0.0
        if "peak_rss_bytes" in event:
            found["peak_rss_bytes"] = float(event["peak_rss_bytes"])
    return found


@dataclass
class Timeline:
    """Wall-clock seconds of each step (the local stack shares this machine's clock)."""

    upload_started: float
    upload_sent: float
    available: float  # the record's verified_at
    created: float
    dispatched: float
    started: float
    downloaded: float  # the last input_downloaded
    computed: float  # function_finished
    stored: float  # result_uploaded
    finished: float  # the record's finished_at
    seen: float  # the client saw SUCCEEDED

    def phases(self) -> dict[str, float]:
        return {
            "upload (sha256 + presigned POST)": self.upload_sent - self.upload_started,
            "verify (until AVAILABLE)": self.available - self.upload_sent,
            "submit (AVAILABLE -> job created)": self.created - self.available,
            "queued (created -> dispatched)": self.dispatched - self.created,
            "provisioning (dispatched -> started)": self.started - self.dispatched,
            "input download (+ size/sha256 check)": self.downloaded - self.started,
            "query (DuckDB, result written)": self.computed - self.downloaded,
            "result upload": self.stored - self.computed,
            "finish (stored -> SUCCEEDED seen, polled 4/s)": self.seen - self.stored,
        }

    @property
    def running(self) -> float:
        """What the instance spends on the job: input download, query, result upload."""
        return self.stored - self.started

    @property
    def total(self) -> float:
        return self.seen - self.upload_started


@dataclass
class Report:
    rows: int
    file_bytes: int
    timeline: Timeline
    duckdb_s: float
    others: dict[str, float] = field(default_factory=dict)  # library -> seconds
    peak_rss_bytes: float | None = None
    sampled_hwm_bytes: int | None = None


def table(report: Report) -> str:
    mib = 1 << 20
    lines = [
        f"sql job over {report.rows:,} rows ({report.file_bytes / mib:,.0f} MiB CSV), query: {QUERY}",
        "",
        f"{'phase':<52}{'seconds':>10}",
    ]
    lines += [f"{name:<52}{value:>10.2f}" for name, value in report.timeline.phases().items()]
    lines.append(f"{'total: upload start -> SUCCEEDED':<52}{report.timeline.total:>10.2f}")
    lines += ["", f"{'the same aggregate':<52}{'seconds':>10}"]
    lines.append(f"{'job running phase (download+query+upload)':<52}{report.timeline.running:>10.2f}")
    lines.append(f"{'DuckDB in-process, same file':<52}{report.duckdb_s:>10.2f}")
    for library, value in report.others.items():
        lines.append(f"{library + ' in-process, same file':<52}{value:>10.2f}")
    ratio = report.timeline.running / report.duckdb_s if report.duckdb_s else float("nan")
    verdict = "meets" if ratio <= RUNNING_TARGET else "misses"
    lines += [
        "",
        f"running phase / in-process DuckDB: {ratio:.2f} ({verdict} the target <= {RUNNING_TARGET})",
    ]
    for name, value in (("ru_maxrss", report.peak_rss_bytes), ("VmHWM sampled", report.sampled_hwm_bytes)):
        if value:
            verdict = "meets" if value < MEMORY_TARGET else "misses"
            lines.append(
                f"worker peak memory ({name}): {value / mib:,.0f} MiB ({verdict} the target < 2 GiB)"
            )
    return "\n".join(lines)


# --- the run ----------------------------------------------------------------------------------------------
def write_csv(path: Path, rows: int) -> None:
    """``k`` (0..999), ``v`` (0..99), ``ts`` (a second apart), written by DuckDB (a Python loop is slower
    than what it measures)."""
    import duckdb

    duckdb.sql(
        f"COPY (SELECT i % {GROUPS} AS k, (i * 7919) % 100 AS v, "
        f"TIMESTAMP '2026-01-01 00:00:00' + to_seconds(i) AS ts FROM range({rows}) r(i)) "
        f"TO '{path}' (HEADER, DELIMITER ',')"
    )


def in_process_duckdb(path: Path) -> float:
    import duckdb

    con = duckdb.connect()
    started = time.perf_counter()
    con.sql(f"CREATE VIEW t AS SELECT * FROM read_csv('{path}')")
    rows = con.sql(QUERY).fetchall()
    elapsed = time.perf_counter() - started
    assert len(rows) == GROUPS, len(rows)
    return elapsed


def in_process_others(path: Path) -> dict[str, float]:
    """The aggregate in polars and pandas, where installed."""
    timings: dict[str, float] = {}
    if importlib.util.find_spec("polars") is not None:
        import polars as pl

        started = time.perf_counter()
        frame = pl.scan_csv(path, try_parse_dates=True)
        result = (
            frame.group_by("k")
            .agg(
                pl.len().alias("n"),
                pl.col("v").sum().alias("total"),
                pl.col("v").mean().alias("mean"),
                pl.col("ts").min().alias("first"),
                pl.col("ts").max().alias("last"),
            )
            .sort("k")
            .collect()
        )
        timings["polars"] = time.perf_counter() - started
        assert result.height == GROUPS
    if importlib.util.find_spec("pandas") is not None:
        import pandas as pd

        started = time.perf_counter()
        frame = pd.read_csv(path, parse_dates=["ts"])
        grouped = frame.groupby("k").agg(
            n=("v", "size"), total=("v", "sum"), mean=("v", "mean"), first=("ts", "min"), last=("ts", "max")
        )
        timings["pandas"] = time.perf_counter() - started
        assert len(grouped) == GROUPS
    return timings


class HwmSampler:
    """Samples VmHWM (peak resident memory) of the runner's worker processes from /proc."""

    def __init__(self, runner: Any) -> None:
        self._runner = runner
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> HwmSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            for pid in self._runner.running().values():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)


def read_worker_events(logs: Path, job_id: str, timeout_s: float = 10.0) -> dict[str, float]:
    """The job's events from the workers' logs, once its worker has written ``job_finished`` (the client
    may see SUCCEEDED a moment before the worker logs it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        events: dict[str, float] = {}
        for log in sorted(logs.glob("i-*.log")):
            events.update(worker_events(log.read_text().splitlines(), job_id))
        if "job_finished" in events or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def warm_up(client: Any, workdir: Path) -> None:
    """One small upload and job first, not measured: every handler's first call builds its clients."""
    small = workdir / "warm-up.csv"
    small.write_text("k,v\n1,2\n")
    upload = client.upload_file(small, timeout=60)
    job = client.submit("sql", {"query": "SELECT * FROM t", "inputs": {"t": upload["upload_id"]}})
    client.wait(job["job_id"], interval=0.05, timeout=60)


def run(rows: int, workdir: Path) -> Report:
    from pijobs.client import TERMINAL_STATES, PijobsClient, file_digest
    from pijobs.local.stack import LocalConfig, LocalStack

    data = workdir / "events.csv"
    print(f"writing {rows:,} rows to {data} ...", file=sys.stderr, flush=True)
    write_csv(data, rows)
    logs = workdir / "workers"
    config = LocalConfig(max_active_stacks=1, log_dir=logs, log_level="WARNING")
    with LocalStack(config) as stack:
        client = PijobsClient(stack.api_url, stack.api_key, timeout=600)
        warm_up(client, workdir)
        print("uploading ...", file=sys.stderr, flush=True)
        upload_started = time.time()
        size, sha256 = file_digest(data)
        created = client.create_upload(data.name, size, sha256)
        client.send_upload(created, data)
        upload_sent = time.time()
        upload = client.wait_upload(created["upload_id"], interval=0.1, timeout=600)
        print("running the job ...", file=sys.stderr, flush=True)
        with HwmSampler(stack.runner) as sampler:
            job_id = client.submit("sql", {"query": QUERY, "inputs": {"t": upload["upload_id"]}})["job_id"]
            # Polled gently: moto serves the worker's download in this process, and each poll competes
            # with it for the interpreter (the phases come from timestamps, not from when a poll saw them).
            while (job := client.get(job_id))["status"] not in TERMINAL_STATES:
                time.sleep(0.25)
            seen = time.time()
        if job["status"] != "SUCCEEDED":
            raise RuntimeError(f"the job ended {job['status']}: {job.get('error')}")
        events = read_worker_events(logs, job_id)
    timeline = Timeline(
        upload_started=upload_started,
        upload_sent=upload_sent,
        available=seconds(upload["verified_at"]) or upload_sent,
        created=seconds(job["created_at"]) or 0.0,
        dispatched=seconds(job["dispatched_at"]) or 0.0,
        started=seconds(job["started_at"]) or 0.0,
        downloaded=events["input_downloaded"],
        computed=events["function_finished"],
        stored=events["result_uploaded"],
        finished=seconds(job["finished_at"]) or 0.0,
        seen=seen,
    )
    print("the same query in-process ...", file=sys.stderr, flush=True)
    return Report(
        rows=rows,
        file_bytes=size,
        timeline=timeline,
        duckdb_s=in_process_duckdb(data),
        others=in_process_others(data),
        peak_rss_bytes=events.get("peak_rss_bytes"),
        sampled_hwm_bytes=sampler.peak or None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sql", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the CSV (default 10,000,000)")
    args = parser.parse_args(argv)
    if args.rows < GROUPS:
        parser.error(f"--rows must be at least {GROUPS} (one per group)")
    with tempfile.TemporaryDirectory(prefix="pijobs-bench-sql-") as tmp:
        report = run(args.rows, Path(tmp))
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
