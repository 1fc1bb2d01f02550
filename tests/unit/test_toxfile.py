"""toxfile.py, tox's inline plugin: pyenv's Pythons 3.10-3.13 go on PATH, so `python3 -m tox` (the README's
command) tests every installed one. Run for real, `python3 -m tox config -e py310 -k py_dot_ver` answers
3.10 from a pyenv-only install; here the plugin's choice of folders, on a pyenv tree built for the test."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def toxfile(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    if (
        importlib.util.find_spec("tox") is None
    ):  # the test envs have no tox: the hook decorator is all it uses
        plugin = types.ModuleType("tox.plugin")
        plugin.impl = lambda function: function  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "tox", types.ModuleType("tox"))
        monkeypatch.setitem(sys.modules, "tox.plugin", plugin)
    spec = importlib.util.spec_from_file_location("toxfile_under_test", REPO / "toxfile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pyenv(root: Path, *versions: str) -> Path:
    for version in versions:
        (root / "versions" / version / "bin").mkdir(parents=True)
    return root


def test_the_newest_patch_of_each_version_goes_first_on_path(
    toxfile: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _pyenv(tmp_path / "pyenv", "3.10.9", "3.10.13", "3.12.1", "3.13.0", "3.9.18", "3.11.7", "3.13.0t")
    monkeypatch.setenv("PYENV_ROOT", str(root))
    monkeypatch.setenv("PATH", "/usr/bin")

    toxfile.tox_add_core_config(None, None)

    expected = [str(root / "versions" / v / "bin") for v in ("3.11.7", "3.10.13", "3.12.1", "3.13.0")]
    assert os.environ["PATH"].split(os.pathsep) == [*expected, "/usr/bin"]
    toxfile.tox_add_core_config(None, None)  # loaded twice (tox run-parallel): PATH does not grow
    assert os.environ["PATH"].split(os.pathsep) == [*expected, "/usr/bin"]


def test_without_pyenv_path_stays(
    toxfile: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "none"))
    monkeypatch.setenv("PATH", "/usr/bin")

    toxfile.tox_add_core_config(None, None)

    assert os.environ["PATH"] == "/usr/bin"
