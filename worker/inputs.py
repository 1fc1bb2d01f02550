"""A job's inputs on its instance: fetched through the presigned GETs its dispatch made, then checked.

The instance role cannot read ``uploads/``: the only way in is the URL the dispatcher presigned for each
pinned input of this attempt (``JobRecord.input_urls``). Each file lands in the scratch directory and must
have exactly the pinned size and sha256, or the job fails ``input_corrupt``: the function never sees a
byte that was not the one the job was accepted with.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from shared import errors
from shared.inputs import PinnedInput
from shared.logs import get_logger
from shared.models import JobRecord
from shared.retry import Backoff

log = get_logger(__name__)

Fetch = Callable[[str, Path], None]
FETCH_TIMEOUT_SECONDS = 60
INPUTS_DIR = "inputs"


def fetch_url(url: str, destination: Path) -> None:
    """GET ``url`` into ``destination``. A refusal (403, 404: expired, or gone) is InputUnavailableError;
    server errors and dropped connections are raised as they are, for the backoff to retry."""
    try:
        with (
            urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_SECONDS) as response,
            destination.open("wb") as out,
        ):
            shutil.copyfileobj(response, out, 1 << 20)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 404, 410):
            raise errors.InputUnavailableError(f"the input's link was refused (HTTP {exc.code})") from exc
        raise


def download_inputs(job: JobRecord, scratch: Path, *, fetch: Fetch, backoff: Backoff) -> dict[str, Path]:
    """Every pinned input of ``job`` as a checked file under ``scratch``, by name."""
    pinned = job.inputs or {}
    if not pinned:
        return {}
    folder = scratch / INPUTS_DIR
    folder.mkdir()
    urls = job.input_urls or {}
    paths: dict[str, Path] = {}
    for name, pin in sorted(pinned.items()):
        url = urls.get(name)
        if url is None or not _url_names_key(url, pin.key):
            raise errors.InputUnavailableError(f"input {name} has no link for its pinned object")
        paths[name] = _download(name, url, folder / name, fetch=fetch, backoff=backoff)
        _check(name, pin, paths[name])
        log.info("input_downloaded", input=name, bytes=pin.bytes)
    return paths


def _download(name: str, url: str, path: Path, *, fetch: Fetch, backoff: Backoff) -> Path:
    try:
        backoff.call("download_input", lambda: fetch(url, path))
    except errors.PijobsError:
        raise
    except Exception as exc:  # what the backoff gave up on: the operator's log has it
        raise errors.InputUnavailableError(f"input {name} could not be downloaded") from exc
    return path


def _url_names_key(url: str, key: str) -> bool:
    """The URL is for the pinned object's key (path-style or virtual-hosted), not some other object."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    return path.endswith("/" + key)


def _check(name: str, pin: PinnedInput, path: Path) -> None:
    from worker.job import file_digest

    size, sha256 = file_digest(path)
    if (size, sha256) != (pin.bytes, pin.sha256):
        log.error("input_corrupt", input=name, bytes=size, expected_bytes=pin.bytes, sha256=sha256)
        raise errors.InputCorruptError(
            f"input {name} does not match the upload the job was accepted with (size or sha256 differ)"
        )
