"""The installed package works on its own: templates and data files ship in the wheel (tox installs it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def _isolated(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -I``: neither the working directory nor PYTHONPATH is on sys.path, only what is installed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-I", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_demo_runs_from_the_installed_package(tmp_path: Path) -> None:
    code = "import pijobs, worker; print(pijobs.__file__); print(worker.__file__)"
    where = _isolated("-c", code, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    from_checkout = [
        path
        for path in map(Path, where.stdout.split())
        if path.resolve().is_relative_to(REPO) and "site-packages" not in path.parts  # tox's envs live in it
    ]
    if from_checkout:
        pytest.skip("pijobs is installed editable (from this checkout); tox installs the wheel")
    demo = _isolated("-m", "pijobs.cli", "demo", "--digits", "100", cwd=tmp_path)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "first digits: 3.14159265358979323846" in demo.stdout
    assert "verified: all 100 digits match" in demo.stdout


def test_the_console_page_ships_in_the_installed_package(tmp_path: Path) -> None:
    code = (
        "import api_handler, sys; from api_handler.console import page; "
        "p = page('https://uploads.example'); "
        "print(api_handler.__file__); print(len(p.html.encode()))"
    )
    built = _isolated("-c", code, cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    where, size = built.stdout.split()
    if Path(where).resolve().is_relative_to(REPO) and "site-packages" not in Path(where).parts:
        pytest.skip("pijobs is installed editable (from this checkout); tox installs the wheel")
    assert int(size) > 10_000  # the HTML with its CSS and JS inline
