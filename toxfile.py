"""tox's inline plugin (tox loads this file itself): the Pythons 3.10-3.13 that pyenv installed side by side
go on PATH, as ``.ci/run`` does, so ``python3 -m tox`` tests every installed one, not only the one PATH has.

pyenv's shims narrow to one version per process, so tox, started through one, would find only it; the
version folders themselves (``$(pyenv root)/versions/3.X.Y/bin``, the newest patch of each) go first on
PATH. Without pyenv nothing changes. A Python that is installed nowhere is still skipped (tox says
``SKIP`` for its env); ``.ci/run`` makes a missing one an error.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tox.plugin import impl

MINORS = ("3.11", "3.10", "3.12", "3.13")  # .ci/run's order: python3 stays 3.11, the lint/type envs' own


def pyenv_root() -> Path | None:
    root = os.environ.get("PYENV_ROOT")
    if not root and shutil.which("pyenv"):
        done = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False)
        root = done.stdout.strip() if done.returncode == 0 else None
    path = Path(root) if root else Path.home() / ".pyenv"
    return path if (path / "versions").is_dir() else None


def pyenv_bins(root: Path) -> list[str]:
    """The bin folder of the newest patch release of each of 3.10-3.13 under ``root``/versions."""
    found = {}
    for entry in (root / "versions").iterdir():
        match = re.fullmatch(r"(3\.\d+)\.(\d+)", entry.name)
        if match and match.group(1) in MINORS and (entry / "bin").is_dir():
            best = found.get(match.group(1))
            if best is None or int(match.group(2)) > best[0]:
                found[match.group(1)] = (int(match.group(2)), entry / "bin")
    return [str(found[minor][1]) for minor in MINORS if minor in found]


@impl
def tox_add_core_config(core_conf: Any, state: Any) -> None:
    root = pyenv_root()
    if root is None:
        return
    path = os.environ.get("PATH", "").split(os.pathsep)
    bins = [b for b in pyenv_bins(root) if b not in path]
    if bins:
        os.environ["PATH"] = os.pathsep.join([*bins, *path])
