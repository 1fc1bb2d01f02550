"""``python -m pijobs.worker --job-id ID``: what the instance's UserData runs."""

from __future__ import annotations

import argparse
import sys

from pijobs.worker.job import run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pijobs.worker", description=__doc__)
    parser.add_argument("--job-id", required=True, help="the job this instance was created for")
    args = parser.parse_args(argv)
    return run_job(args.job_id)


if __name__ == "__main__":
    sys.exit(main())
