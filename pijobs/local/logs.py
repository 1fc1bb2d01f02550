"""The workers' logs of the embedded stack: one file per instance in the log directory (``pijobs up`` prints
where), each holding what that job's worker wrote: its JSON log lines, which name the job, and the traceback
if it crashed. ``pijobs logs JOB`` prints a job's, one file per attempt."""

from __future__ import annotations

import re
from pathlib import Path

from pijobs.errors import OperationError, UsageError

LOGS_FOLDER = "logs"  # under the data directory
_JOB_ID = re.compile(rb'"job_id":\s*"([0-9a-f]{32})"')
_HEAD_BYTES = 1 << 16  # the first lines name the job


def default_log_dir(data_dir: Path) -> Path:
    return data_dir / LOGS_FOLDER


def job_logs(log_dir: Path, job_id: str) -> list[Path]:
    """The log files of the job whose id is ``job_id`` or starts with it, oldest first (one per attempt)."""
    if not log_dir.is_dir():
        raise OperationError(f"no worker logs at {log_dir}: pass the --log-dir that pijobs up printed")
    found: dict[str, list[Path]] = {}
    for path in log_dir.glob("*.log"):
        with path.open("rb") as log:
            named = {match.decode() for match in _JOB_ID.findall(log.read(_HEAD_BYTES))}
        for found_id in named:
            if found_id.startswith(job_id):
                found.setdefault(found_id, []).append(path)
    if len(found) > 1:
        raise UsageError(f"{job_id} is the start of {len(found)} jobs' ids: {', '.join(sorted(found))}")
    if not found:
        raise OperationError(
            f"no worker log of job {job_id} in {log_dir}: not started yet, or run under another pijobs up"
        )
    (paths,) = found.values()
    return sorted(paths, key=lambda p: p.stat().st_mtime)
