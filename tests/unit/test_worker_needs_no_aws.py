"""The worker (and each installed function it runs) imports and starts without boto3 or botocore: its
artifact ships neither, and a job's instance holds no credentials to use them with."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = """
import sys
for name in ("boto3", "botocore", "s3transfer"):
    sys.modules[name] = None  # an import of it now fails
import pijobs.worker.__main__, pijobs.worker.job
from pijobs.shared.functions import installed_functions
from pijobs.shared.settings import WorkerSettings
functions = installed_functions()
settings = WorkerSettings.from_env({"PIJOBS_API_URL": "http://127.0.0.1:9", "PIJOBS_WORKER_TOKEN": "t" * 43})
print(sorted(functions), repr(settings.worker_token))
"""


def test_the_worker_and_the_functions_import_without_boto3() -> None:
    done = subprocess.run([sys.executable, "-c", BLOCKED], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert "'pi'" in done.stdout and "'sql'" in done.stdout
    assert "t" * 43 not in done.stdout  # the settings never print the token
