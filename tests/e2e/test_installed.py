"""The wheel, as a user installs it: one top-level package, ``pijobs``, that works beside other projects'
``shared``, ``worker`` and ``dispatcher`` packages, with its templates and data files inside."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
FOREIGN = ("shared", "worker", "dispatcher", "api_handler")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(REPO)],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("pijobs-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv holding the wheel alone; its dependencies are this environment's (a ``.pth`` names them,
    after the venv's own site-packages, so the venv's ``pijobs`` is the one imported)."""
    root = tmp_path_factory.mktemp("venv")
    venv.create(root, with_pip=False, symlinks=True)
    python = root / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        timeout=300,
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "zz-test-dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return python


def test_the_wheel_holds_one_top_level_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")] or [None]
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"pijobs"}
    assert not any(name.split("/")[0] in FOREIGN for name in names)
    # what the runtime needs travels inside the package
    for data in (
        "pijobs/templates/primary.yaml",
        "pijobs/api_handler/static/console.js",
        "pijobs/job_template.py",  # renders every function's job template
    ):
        assert data in names
    if top_level is not None:
        with zipfile.ZipFile(wheel) as archive:
            assert archive.read(top_level).decode().split() == ["pijobs"]


def test_pyproject_lists_every_package_of_the_checkout(wheel: Path) -> None:
    """A new subpackage must be added to pyproject's list, or the wheel would silently lack it."""
    folders = {
        ".".join(("pijobs", *path.parent.relative_to(REPO).parts)).replace("pijobs.pijobs", "pijobs")
        for top in ("pijobs", *FOREIGN)
        for path in (REPO / top).rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    with zipfile.ZipFile(wheel) as archive:
        shipped = {
            name.rpartition("/")[0].replace("/", ".")
            for name in archive.namelist()
            if name.endswith("/__init__.py")
        }
    assert folders == shipped


def test_the_demo_runs_beside_other_projects_shared_worker_and_dispatcher(
    fresh_python: Path, tmp_path: Path
) -> None:
    project = tmp_path / "their-project"
    for name in FOREIGN:
        (project / name).mkdir(parents=True)
        (project / name / "__init__.py").write_text(f"OWNER = 'their-project'\nNAME = {name!r}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AWS_ENDPOINT_URL")}
    probe = subprocess.run(
        [
            str(fresh_python),
            "-c",
            "import pijobs, shared, worker; from pijobs import ops; from pijobs.shared import functions; "
            "print(pijobs.__file__); print(shared.OWNER, worker.OWNER); "
            "print(sorted(functions.installed_functions()))",
        ],
        cwd=project,  # on sys.path first, as a project's own folder is
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    where, owners, functions = probe.stdout.splitlines()
    assert Path(where).resolve().is_relative_to(fresh_python.parent.parent.resolve())
    assert owners == "their-project their-project"
    assert "'pi'" in functions and "'sql'" in functions

    demo = subprocess.run(
        [str(fresh_python), "-m", "pijobs.cli", "demo", "--digits", "100"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "first digits: 3.14159265358979323846" in demo.stdout
    assert "verified: all 100 digits match" in demo.stdout


def test_the_console_page_ships_in_the_installed_package(fresh_python: Path, tmp_path: Path) -> None:
    code = (
        "from pijobs.api_handler.console import page; "
        "p = page('https://uploads.example'); print(len(p.html.encode()))"
    )
    built = subprocess.run(
        [str(fresh_python), "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, built.stderr
    assert int(built.stdout) > 10_000  # the HTML with its CSS and JS inline
