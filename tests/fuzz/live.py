"""Fuzz the live embedded stack with schemathesis, from the API's own document (tox -e fuzz).

    python -m tests.fuzz.live [--max-time SECONDS] [extra schemathesis options]

Starts the embedded stack, points ``st run`` at ``/openapi.json`` with a real API key, runs every phase
(examples, coverage, fuzzing, stateful: the document's links lead from a submitted job to reading,
cancelling and downloading it) with the checks a client relies on, and stops the stack. Exit status:
schemathesis' own (0 only with no failure). Jobs are kept tiny by the document itself (its examples), and
the stack's cap keeps the number of live worker processes small whatever the fuzzer submits.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)
PHASES = "examples,coverage,fuzzing,stateful"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-time", type=int, default=180, help="schemathesis' time budget (seconds)")
    args, extra = parser.parse_known_args(argv)

    from pijobs.local.stack import LocalConfig, LocalStack

    st = shutil.which("st") or str(Path(sys.executable).with_name("st"))
    report = Path(os.environ.get("PIJOBS_FUZZ_REPORT_DIR") or tempfile.mkdtemp(prefix="pijobs-fuzz-"))
    # Throttling as on AWS would answer the fuzzer 429 (documented) instead of exercising the API.
    config = LocalConfig(
        max_active_stacks=2, throttle_rate=10_000.0, throttle_burst=10_000, log_level="ERROR"
    )
    with LocalStack(config) as stack:
        command = [
            st,
            "run",
            f"{stack.api_url}/openapi.json",
            "--header",
            f"x-api-key: {stack.api_key}",
            "--phases",
            PHASES,
            "--checks",
            ",".join(CHECKS),
            "--max-time",
            str(args.max_time),
            # One worker: with two threads, CPython 3.11's ast module (which hypothesis calls to describe
            # strategies) can fail with "AST constructor recursion depth mismatch" (a race in its state).
            "--workers",
            "1",
            "--max-redirects",
            "0",
            "--request-timeout",
            "30",
            "--report",
            "junit",
            "--report-dir",
            str(report),
            *extra,
        ]
        print(
            "running:", " ".join(c if "x-api-key" not in c else "x-api-key: ***" for c in command), flush=True
        )
        status = subprocess.run(command, check=False).returncode
    print(f"schemathesis report: {report}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
