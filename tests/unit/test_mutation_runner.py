"""The mutation runner (tests/mutation/run.py, ``tox -e mutation``): what it makes of a mutant's test run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# In a fresh interpreter: the runner serves the mutant to forked children, which must import it themselves.
_RUN_ONE_MUTANT = """
from tests.mutation import run

selection = run.Selection(
    tests=[], order=["tests/integration"], calls={}, functions=[], seconds=1.0, durations={}
)
mutant = run.Mutant(key="m1", line=1, source="raise RuntimeError('broken at import')\\n")
for _, verdict, why in run.run_all("shared/capacity.py", [mutant], selection):
    print(verdict)
    print(why)
"""


def test_a_mutant_that_breaks_loading_a_conftest_is_killed_and_the_run_goes_on() -> None:
    """tests/integration/conftest.py imports shared/capacity.py: a mutant that raises on import makes
    pytest exit with USAGE_ERROR ("ImportError while loading conftest"), which ended the whole run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", _RUN_ONE_MUTANT]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stdout + done.stderr
    verdict, *why = done.stdout.splitlines()
    assert verdict == "KILLED"
    assert "broken at import" in "\n".join(why)
