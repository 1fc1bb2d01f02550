"""Benchmark the webhooks on the embedded stack, with a local receiver (pijobs.listen) on 127.0.0.1.

    python -m bench.webhooks [--jobs 100] [--failing-jobs 20] [--restart-jobs 20] [--digits 50]

- healthy: ``--jobs`` pi jobs with one webhook for every event type; latency from the status change (the
  event's time, the payload's ``updated_at``) to its receipt, p50 and p95; deliveries per event (1.0 is
  exactly once); events lost (a state change in the lifecycle's outbox, ``event#`` items, never received:
  a job retried after a lost worker has its second attempt's events too); deliveries that did not verify.
  The latency splits into the change to its delivery being made (the stream and the notifier) and the
  delivery made to its receipt (the queue, the sender and the POST).
- failing: the receiver answers 500 to the first three deliveries of each event, then 204: every event still
  received on the compressed schedule (1 s, 2 s, 4 s here), the time from the first submit to the last one.
- restart: the receiver is down (nothing listens on its port) while ``--restart-jobs`` jobs run under
  ``pijobs up --data-dir``; it is stopped (Ctrl-C) and started again on the same directory, then the
  receiver comes up: events lost.

``--only healthy|failing|restart`` (repeatable) runs some of them.

Targets (issue 25): p95 at most 1 s, 0 events lost, 0 unsigned or wrongly signed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import requests
from boto3.dynamodb.types import TypeDeserializer

from pijobs.api_handler.notifier import event_id
from pijobs.listen import Listener, Received
from pijobs.local.stack import PRIMARY_STACK, LocalConfig, LocalStack
from pijobs.shared.hooks import DELIVERY_PREFIX
from pijobs.shared.lifecycle import EVENT_PREFIX
from pijobs.shared.status import TERMINAL_STATES

TIMEOUT_S = 600
TERMINAL = {state.value for state in TERMINAL_STATES}
_DESERIALIZER = TypeDeserializer()
SECONDS_PER_JOB = 5  # a slow machine's pace at 2 slots (a tenant's cap): the wait for the jobs' ends


@dataclass
class Inbox:
    """What a receiver got: each delivery, and whether it verified; the jobs whose end arrived and the
    verified event ids, kept as deliveries arrive (the waits read them ten times a second)."""

    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ended_jobs: set[str] = field(default_factory=set)
    verified: set[str] = field(default_factory=set)

    def add(self, item: Received) -> None:
        with self.lock:
            self.received.append(item)
            if item.verified:
                self.verified.add(item.message_id)
                data = (item.payload or {}).get("data") or {}
                if data.get("status") in TERMINAL:
                    self.ended_jobs.add(str(data.get("job_id")))

    def verified_ids(self) -> set[str]:
        with self.lock:
            return set(self.verified)

    def unverified(self) -> int:
        with self.lock:
            return sum(1 for r in self.received if not r.verified)

    def unverified_lines(self) -> list[str]:
        """One line per delivery that did not verify: its id, the age of its timestamp on arrival, how many
        signatures it carried, its length, and whether the event verified on another attempt."""
        with self.lock:
            refused = [r for r in self.received if not r.verified]
            return [_unverified_line(r, r.message_id in self.verified) for r in refused]


def _unverified_line(r: Received, verified_later: bool) -> str:
    stamp = r.headers.get("webhook-timestamp", "")
    age = f"{r.received_at - int(stamp):.0f} s" if stamp.isdigit() else "none"
    signatures = len(r.headers.get("webhook-signature", "").split())
    length = r.headers.get("content-length", "-")
    return f" {r.message_id or '-'}: timestamp age {age}, {signatures} signature(s), {length} bytes, " + (
        "verified on another attempt" if verified_later else "never verified"
    )


def ended(inbox: Inbox, job_ids: list[str]) -> bool:
    """Every job's end (SUCCEEDED, FAILED, ...) arrived: its last event is in the lifecycle's outbox."""
    with inbox.lock:
        return set(job_ids) <= inbox.ended_jobs


def outbox_ids(ddb: Any, table: str, job_ids: list[str]) -> set[str]:
    """The id of every state-change event the lifecycle recorded for ``job_ids`` (its ``event#`` outbox
    items): what the receiver must get, whatever happened to the jobs (a retried job's second attempt has
    events too). Only these jobs': moto keeps an earlier run's table in this process."""
    pages = ddb.get_paginator("scan").paginate(
        TableName=table,
        FilterExpression="begins_with(pk, :event)",
        ExpressionAttributeValues={":event": {"S": EVENT_PREFIX}},
    )
    events = [
        {k: _DESERIALIZER.deserialize(v) for k, v in item.items()} for p in pages for item in p["Items"]
    ]
    wanted = set(job_ids)
    return {event_id(event) for event in events if event["job_id"] in wanted}


def every_event(stack_table: tuple[Any, str], inbox: Inbox, job_ids: list[str]) -> set[str]:
    """Wait for every job's end at the receiver; then the outbox's events: the ids to receive."""
    wait_until(lambda: ended(inbox, job_ids), "every job's end", TIMEOUT_S + SECONDS_PER_JOB * len(job_ids))
    return outbox_ids(*stack_table, job_ids)


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


def wait_until(predicate: Any, what: str, timeout_s: float = TIMEOUT_S) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
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


@contextlib.contextmanager
def webhook(stack: LocalStack, api: requests.Session, url: str) -> Iterator[str]:
    """A webhook to ``url`` (its secret) for the run, removed after it: moto's tables outlive a stack in
    this process, and the next run's jobs (the same key) would also go to this run's closed receiver."""
    made = api.post(f"{stack.api_url}/webhooks", json={"url": url}).json()
    try:
        yield str(made["secret"])
    finally:
        api.delete(f"{stack.api_url}/webhooks/{made['webhook_id']}")


def healthy(jobs: int, digits: int) -> dict[str, Any]:
    inbox = Inbox()
    with LocalStack(LocalConfig(max_active_stacks=4, log_level="WARNING")) as stack:
        api = session(stack)
        secrets: list[str] = []
        with Listener(secrets, inbox.add) as listener, webhook(stack, api, listener.url) as secret:
            secrets.append(secret)
            job_ids = submit(stack, api, jobs, digits)
            ids = every_event((stack.client("dynamodb"), stack.outputs["TableName"]), inbox, job_ids)
            wait_until(lambda: ids <= inbox.verified_ids(), "every event of the healthy run")
            time.sleep(2)  # duplicates, if any, arrive now
            made = delivery_times(stack)
    firsts: dict[str, tuple[float, float]] = {}
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
        "unverified_lines": inbox.unverified_lines(),
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
        with (
            Listener(secrets, inbox.add, answer=answer) as listener,
            webhook(stack, api, listener.url) as secret,
        ):
            secrets.append(secret)
            started = time.monotonic()
            job_ids = submit(stack, api, jobs, digits)
            ids = every_event((stack.client("dynamodb"), stack.outputs["TableName"]), inbox, job_ids)
            wait_until(lambda: all(tries[i] >= 4 for i in ids), "every event answered 204")
            elapsed = time.monotonic() - started
    return {
        "events": len(ids),
        "attempts_per_event": sum(tries[i] for i in ids) / len(ids),
        "lost": sum(1 for i in ids if tries[i] < 4),
        "unverified": inbox.unverified(),
        "unverified_lines": inbox.unverified_lines(),
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

    def table(self) -> tuple[Any, str]:
        """A DynamoDB client on the AWS endpoint it printed, and its jobs table (an operator's view)."""
        aws = {
            "endpoint_url": self.value("AWS endpoint: "),
            "region_name": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        outputs = boto3.client("cloudformation", **aws).describe_stacks(StackName=PRIMARY_STACK)["Stacks"][0]
        table = next(o["OutputValue"] for o in outputs["Outputs"] if o["OutputKey"] == "TableName")
        return boto3.client("dynamodb", **aws), table

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
            return all(api.get(f"{first.url}/jobs/{j}").json()["status"] in TERMINAL for j in job_ids)

        wait_until(finished, "the jobs, with the receiver down", TIMEOUT_S + SECONDS_PER_JOB * jobs)
    finally:
        first.stop()
    second = Up(folder / "data", folder / "up-2.log")
    try:
        ids = outbox_ids(*second.table(), job_ids)
        with Listener([made["secret"]], inbox.add, port=port):
            elapsed = wait_until(lambda: ids <= inbox.verified_ids(), "every event after the restart")
    finally:
        second.stop()
    return {
        "events": len(ids),
        "lost": len(ids - inbox.verified_ids()),
        "unverified": inbox.unverified(),
        "unverified_lines": inbox.unverified_lines(),
        "seconds_after_restart": elapsed,
    }


def report_unverified(figures: dict[str, Any]) -> None:
    """Each delivery that did not verify, on stderr: what a signing fault or a cut request would show."""
    for line in figures["unverified_lines"]:
        print("did not verify:" + line, file=sys.stderr, flush=True)


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
        report_unverified(first)
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
        report_unverified(second)
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
        report_unverified(third)
        show([
            ("restart: events", third["events"], ""),
            ("restart: events lost", third["lost"], "0"),
            ("restart: seconds after the restart", f"{third['seconds_after_restart']:.1f}", ""),
        ])  # fmt: skip
    show([("unsigned or wrongly signed", unverified, "0")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
