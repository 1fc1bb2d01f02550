"""``pijobs demo``: one job end to end over HTTP, as a customer would, with the digits checked."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import requests

from pijobs.shared.status import TERMINAL_STATES


def reference_pi(digits: int) -> str:
    """'3.' and ``digits`` decimals from MPFR's const_pi, an independent method, truncated."""
    import gmpy2

    context = gmpy2.get_context()
    saved = context.precision
    try:
        context.precision = int((digits + 20) * 3.3219280948873626) + 64
        value = gmpy2.const_pi()
        scaled = gmpy2.mpz(gmpy2.floor(value * gmpy2.mpz(10) ** digits))
    finally:
        context.precision = saved
    text = scaled.digits(10)
    return f"{text[0]}.{text[1:]}"


def run_demo(api_url: str, api_key: str, *, digits: int, timeout: float, out: Any = print) -> int:
    session = requests.Session()
    session.headers["x-api-key"] = api_key
    started = time.monotonic()
    response = session.post(f"{api_url}/jobs", json={"digits": digits, "name": "demo"}, timeout=30)
    if response.status_code != 202:
        out(f"submit failed: HTTP {response.status_code} {response.text}")
        return 1
    job_id = response.json()["job_id"]
    out(f"job id: {job_id}")
    job = _wait(session, f"{api_url}/jobs/{job_id}", timeout)
    elapsed = time.monotonic() - started
    out(f"final status: {job['status']} after {elapsed:.2f} s (this client: submit until it saw the end)")
    out("phases, from the job record's timestamps:")
    for phase, seconds in phases(job).items():
        out(f"  {phase:<13} {seconds:8.3f} s")
    if job["status"] != "SUCCEEDED":
        out(f"error: {job.get('error')}")
        return 1
    result = job["result"]
    body = requests.get(result["url"], timeout=60)
    body.raise_for_status()
    text = body.text.rstrip("\n").splitlines()
    computed = text[-1]
    out(f"result: {result['filename']} ({result['bytes']} bytes, sha256 {result['sha256']})")
    out(f"first digits: {computed[:22]}")
    out(f"last digits:  ...{computed[-20:]}")
    expected = reference_pi(digits)
    if computed != expected:
        out("digits do NOT match the independent reference (MPFR const_pi)")
        return 1
    out(f"verified: all {digits} digits match MPFR's const_pi")
    return 0


def _wait(session: requests.Session, url: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = session.get(url, timeout=30).json()
        if job["status"] in TERMINAL_STATES or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def phases(job: dict[str, Any]) -> dict[str, float]:
    """Seconds spent queued, provisioning and running, from the record's timestamps."""
    marks = [
        ("queued", "created_at", "dispatched_at"),
        ("provisioning", "dispatched_at", "started_at"),
        ("running", "started_at", "finished_at"),
        ("recorded", "created_at", "finished_at"),
    ]
    result = {}
    for name, start, end in marks:
        if job.get(start) and job.get(end):
            result[name] = (_parse(job[end]) - _parse(job[start])).total_seconds()
    return result


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
