"""Shared by every test: botocore reads each service's model once per process, not once per test, and moto
makes no sample AMIs.

A botocore session loads its service models (large JSON files) through its own loader and caches them in
it. moto's ``mock_aws`` resets boto3's default session, so every test's clients started with an empty cache
and spent about 0.2 s per client re-reading the same files. One loader, read-only once filled, serves them
all; what the tests exercise (the clients' calls) is unchanged.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import botocore.loaders
import botocore.session
import pytest

from pijobs.shared.functions import ENTRY_POINT_GROUP, _installed

# moto's EC2 makes some 2,600 sample AMIs with a volume each for every account it starts (0.65 s per test);
# the job templates take their image from an SSM parameter and no test looks one up.
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")

_LOADER = botocore.loaders.create_loader()


def _shared_loader(search_path_string: str | None = None) -> botocore.loaders.Loader:
    return _LOADER if search_path_string is None else botocore.loaders.create_loader(search_path_string)


botocore.session.create_loader = _shared_loader  # type: ignore[assignment]


# --- the word-count test plug-in ----------------------------------------------------------------------------

WORDCOUNT = Path(__file__).resolve().parent / "plugins" / "wordcount"
_ENTRY_POINTS = re.compile(r'^\[project\.entry-points\."([^"]+)"\]\n(.*?)(?=^\[|\Z)', re.M | re.S)


def _wordcount_dist_info(target: Path) -> None:
    """What installing tests/plugins/wordcount would leave on sys.path, read from its pyproject.toml: its
    name, version and entry points (the package itself is imported from the source folder)."""
    pyproject = (WORDCOUNT / "pyproject.toml").read_text()
    name = re.search(r'^name = "([^"]+)"', pyproject, re.M)
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M)
    assert name and version, "tests/plugins/wordcount/pyproject.toml names no project"
    sections = [
        f"[{group}]\n" + body.replace('"', "").strip() + "\n"
        for group, body in _ENTRY_POINTS.findall(pyproject)
    ]
    dist_info = target / f"{name[1].replace('-', '_')}-{version[1]}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name[1]}\nVersion: {version[1]}\n")
    (dist_info / "entry_points.txt").write_text("\n".join(sections))


@pytest.fixture(scope="session")
def wordcount_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The word-count test plug-in (tests/plugins/wordcount, which tox installs) is registered as a function,
    in this process and in the processes it starts (workers: PYTHONPATH), whether or not it is installed.

    Request it from every test that submits, lists or expects word-count; once registered it stays for the
    rest of the session, as an installed one would be.
    """
    if any(entry.name == "word-count" for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)):
        yield  # installed (tox's commands_pre)
        return
    registered = tmp_path_factory.mktemp("wordcount-registered")
    _wordcount_dist_info(registered)
    paths = [str(registered), str(WORDCOUNT)]
    with pytest.MonkeyPatch.context() as patch:
        for path in reversed(paths):
            patch.syspath_prepend(path)
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [*paths, os.environ.get("PYTHONPATH")])))
        importlib.invalidate_caches()
        _installed.cache_clear()
        assert "word-count" in _installed(), "the word-count plug-in did not register"
        yield
    _installed.cache_clear()
