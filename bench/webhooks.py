"""Benchmark the webhooks on the embedded stack, with a local receiver (pijobs.listen) on 127.0.0.1.

    python -m bench.webhooks [--jobs 100] [--failing-jobs 20] [--restart-jobs 20] [--digits 50]

- healthy: ``--jobs`` pi jobs with one webhook for every event type; latency from the status change (the
  event's time, the payload's ``updated_at``) to its receipt, p50 and p95; deliveries per event (1.0 is
  exactly once); events lost (a job's PROVISIONING, RUNNING and SUCCEEDED never received); deliveries that
  did not verify.
- failing: the receiver answers 500 to the first three deliveries of each event, then 204: every event still
  received on the compressed schedule (1 s, 2 s, 4 s here), the time to the last one.
- restart: the receiver is down (nothing listens on its port) while ``--restart-jobs`` jobs run under
  ``pijobs up --data-dir``; it is stopped (Ctrl-C) and started again on the same directory, then the
  receiver comes up: events lost.

``--only healthy|failing|restart`` (repeatable) runs some of them.

Targets (issue 25): p95 at most 1 s, 0 events lost, 0 unsigned or wrongly signed.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from pijobs.listen import Listener, Received
from pijobs.local.stack import LocalConfig, LocalStack
from pijobs.shared.hooks import DELIVERY_PREFIX

EXPECTED = ("PROVISIONING", "RUNNING", "SUCCEEDED")
TIMEOUT_S = 600


@dataclass
class Inbox:
    """What a receiver got: each delivery, and whether it verified."""

    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, item: Received) -> None:
        with self.lock:
            self.received.append(item)

    def verified_ids(self) -> set[str]:
        with self.lock:
            return {r.message_id for r in self.received if r.verified}

    def unverified(self) -> int:
        with self.lock:
            return sum(1 for r in self.received if not r.verified)


def expected_ids(job_ids: list[str]) -> set[str]:
    return {f"evt_{job}_1_{status.lower()}" for job in job_ids for status in EXPECTED}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def session(stack: LocalStack) -> requests.Session:
    made = requests.Session()
    made.headers["x-api-key"] = stack.api_key
    return made


def submit(stack: LocalStack, api: requests.Session, count: int, digits: int) -> list[str]:
    return [
        api.post(f"{stack.api_url}/jobs", json={"digits": digits}, timeout=30).json()["job_id"]
        for _ in range(count)
    ]


def wait_until(predicate: Any, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > TIMEOUT_S:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.1)
    return time.monotonic() - started


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


def delivery_times(stack: LocalStack) -> dict[str, float]:
    """Each event's delivery: when the notifier made it (its ``created_at``), by event id."""
    pages = (
        stack.client("dynamodb")
        .get_paginator("scan")
        .paginate(
            TableName=stack.outputs["TableName"],
            FilterExpression="begins_with(pk, :delivery)",
            ExpressionAttributeValues={":delivery": {"S": DELIVERY_PREFIX}},
            ProjectionExpression="event_id, created_at",
        )
    )
    return {
        item["event_id"]["S"]: _at(item["created_at"]["S"])
        for page in pages
        for item in page.get("Items", [])
    }


def healthy(jobs: int, digits: int) -> dict[str, Any]:
    inbox = Inbox()
    with LocalStack(LocalConfig(max_active_stacks=4, log_level="WARNING")) as stack:
        api = session(stack)
        secrets: list[str] = []
        with Listener(secrets, inbox.add) as listener:
            secrets.append(api.post(f"{stack.api_url}/webhooks", json={"url": listener.url}).json()["secret"])
            ids = expected_ids(submit(stack, api, jobs, digits))
            wait_until(lambda: ids <= inbox.verified_ids(), "every event of the healthy run")
            time.sleep(2)  # duplicates, if any, arrive now
            made = delivery_times(stack)
    firsts = {}
    for r in inbox.received:
        if r.verified and r.payload and r.message_id in ids:
            firsts.setdefault(r.message_id, (_at(r.payload["data"]["updated_at"]), r.received_at))
    latencies = [received - changed for changed, received in firsts.values()]
    notifier = [made[i] - changed for i, (changed, _) in firsts.items() if i in made]
    sender = [received - made[i] for i, (_, received) in firsts.items() if i in made]
    counts = collections.Counter(r.message_id for r in inbox.received if r.verified)
    return {
        "events": len(ids),
        "p50_s": statistics.median(latencies),
        "p95_s": p95(latencies),
        "max_s": max(latencies),
        "notifier_p50_s": statistics.median(notifier),
        "notifier_p95_s": p95(notifier),
        "sender_p50_s": statistics.median(sender),
        "sender_p95_s": p95(sender),
        "per_event": sum(counts[i] for i in ids) / len(ids),
        "lost": len(ids - inbox.verified_ids()),
        "unverified": inbox.unverified(),
    }


def failing(jobs: int, digits: int) -> dict[str, Any]:
    inbox = Inbox()
    tries: collections.Counter[str] = collections.Counter()

    def answer(received: Received) -> int:
        tries[received.message_id] += 1
        return 500 if tries[received.message_id] <= 3 else 204

    with LocalStack(LocalConfig(max_active_stacks=4, log_level="WARNING")) as stack:
        api = session(stack)
        secrets: list[str] = []
        with Listener(secrets, inbox.add, answer=answer) as listener:
            secrets.append(api.post(f"{stack.api_url}/webhooks", json={"url": listener.url}).json()["secret"])
            ids = expected_ids(submit(stack, api, jobs, digits))
            elapsed = wait_until(lambda: all(tries[i] >= 4 for i in ids), "every event answered 204")
    return {
        "events": len(ids),
        "attempts_per_event": sum(tries[i] for i in ids) / len(ids),
        "lost": sum(1 for i in ids if tries[i] < 4),
        "unverified": inbox.unverified(),
        "seconds": elapsed,
    }


class Up:
    """One ``pijobs up --data-dir`` process: its API URL and key, read from what it printed."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self._log = log.open("w")
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pijobs.cli", "up", "--data-dir", str(data_dir)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PIJOBS_LOG_LEVEL": "WARNING"},
            start_new_session=True,
        )
        wait_until(lambda: self.value("API key: ") or self.process.poll() is not None, "pijobs up")
        self.url, self.key = self.value("API: "), self.value("API key: ")

    def value(self, prefix: str) -> str:
        lines = self.log.read_text().splitlines()
        return next((line[len(prefix) :] for line in lines if line.startswith(prefix)), "")

    def stop(self) -> None:
        """Ctrl-C, as a user stops it: the data dir's last copy is made on the way out."""
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=120)
        self._log.close()


def restart(jobs: int, digits: int, folder: Path) -> dict[str, Any]:
    inbox = Inbox()
    port = free_port()
    first = Up(folder / "data", folder / "up-1.log")
    try:
        api = requests.Session()
        api.headers["x-api-key"] = first.key
        made = api.post(f"{first.url}/webhooks", json={"url": f"http://127.0.0.1:{port}/"}).json()
        job_ids = [
            api.post(f"{first.url}/jobs", json={"digits": digits}, timeout=30).json()["job_id"]
            for _ in range(jobs)
        ]

        def finished() -> bool:
            return all(api.get(f"{first.url}/jobs/{j}").json()["status"] == "SUCCEEDED" for j in job_ids)

        wait_until(finished, "the jobs, with the receiver down")
    finally:
        first.stop()
    ids = expected_ids(job_ids)
    second = Up(folder / "data", folder / "up-2.log")
    try:
        with Listener([made["secret"]], inbox.add, port=port):
            elapsed = wait_until(lambda: ids <= inbox.verified_ids(), "every event after the restart")
    finally:
        second.stop()
    return {
        "events": len(ids),
        "lost": len(ids - inbox.verified_ids()),
        "unverified": inbox.unverified(),
        "seconds_after_restart": elapsed,
    }


def pair(figures: dict[str, Any], part: str) -> str:
    return f"{figures[part + '_p50_s']:.2f}/{figures[part + '_p95_s']:.2f}"


def show(rows: list[tuple[str, Any, str]]) -> None:
    for name, value, target in rows:
        print(f"{name.ljust(36)}  {value!s:>9}  {target}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--failing-jobs", type=int, default=20)
    parser.add_argument("--restart-jobs", type=int, default=20)
    parser.add_argument("--digits", type=int, default=50)
    parser.add_argument("--only", choices=["healthy", "failing", "restart"], action="append")
    args = parser.parse_args(argv)
    only = set(args.only or ["healthy", "failing", "restart"])

    print(f"{'measure'.ljust(36)}  {'value':>9}  target", flush=True)
    unverified = 0
    if "healthy" in only:
        first = healthy(args.jobs, args.digits)
        unverified += first["unverified"]
        show([
            ("healthy: events", first["events"], ""),
            ("healthy: latency p50 (s)", f"{first['p50_s']:.3f}", ""),
            ("healthy: latency p95 (s)", f"{first['p95_s']:.3f}", "<= 1"),
            ("healthy: latency max (s)", f"{first['max_s']:.3f}", ""),
            ("healthy: change to delivery made p50/p95", pair(first, "notifier"), ""),
            ("healthy: made to received p50/p95", pair(first, "sender"), ""),
            ("healthy: deliveries per event", f"{first['per_event']:.3f}", "1"),
            ("healthy: events lost", first["lost"], "0"),
        ])  # fmt: skip
    if "failing" in only:
        second = failing(args.failing_jobs, args.digits)
        unverified += second["unverified"]
        show([
            ("failing x3: events", second["events"], ""),
            ("failing x3: attempts per event", f"{second['attempts_per_event']:.2f}", "4"),
            ("failing x3: events lost", second["lost"], "0"),
            ("failing x3: seconds to the last", f"{second['seconds']:.1f}", ""),
        ])  # fmt: skip
    if "restart" in only:
        with tempfile.TemporaryDirectory() as folder:
            third = restart(args.restart_jobs, args.digits, Path(folder))
        unverified += third["unverified"]
        show([
            ("restart: events", third["events"], ""),
            ("restart: events lost", third["lost"], "0"),
            ("restart: seconds after the restart", f"{third['seconds_after_restart']:.1f}", ""),
        ])  # fmt: skip
    show([("unsigned or wrongly signed", unverified, "0")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
