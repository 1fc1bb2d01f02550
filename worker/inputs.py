"""A job's inputs on its instance: fetched through the presigned GETs the worker channel's ``start``
answered, then checked.

The instance has no credentials: the only way to an input is the URL the platform presigned for each pinned
input of this attempt, for exactly that object, answered to this attempt's token and kept nowhere. Each file
lands in the scratch directory and must have exactly the pinned size and sha256, or the job fails
``input_corrupt``: the function never sees a byte that was not the one the job was accepted with.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from pijobs.shared import errors
from pijobs.shared.digest import Digest, digest_chunks, file_digest, read_chunks
from pijobs.shared.logs import get_logger
from pijobs.shared.retry import Backoff

log = get_logger(__name__)

# GETs a URL into a file; may return the (size, sha256) it computed on the way, else None (then the file is
# read again to check it).
Fetch = Callable[[str, Path], "tuple[int, str] | None"]
FETCH_TIMEOUT_SECONDS = 60
INPUTS_DIR = "inputs"


class InputGrant(BaseModel):
    """One pinned input as ``start`` answers it: the upload, its pinned size and sha256, a fresh GET."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    upload_id: str
    bytes: int
    sha256: str
    url: str


def fetch_url(url: str, destination: Path) -> tuple[int, str]:
    """GET ``url`` into ``destination``, hashing as it arrives (one pass over a large input, not two):
    its (size, sha256). A refusal (403, 404: expired, or gone) is InputUnavailableError; server errors and
    dropped connections are raised as they are, for the backoff to retry."""
    try:
        with (
            urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_SECONDS) as response,
            destination.open("wb") as out,
        ):
            received = digest_chunks(read_chunks(response), sink=out.write)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 404, 410):
            raise errors.InputUnavailableError(f"the input's link was refused (HTTP {exc.code})") from exc
        raise
    return received.bytes, received.sha256


def download_inputs(
    inputs: dict[str, InputGrant], scratch: Path, *, fetch: Fetch, backoff: Backoff
) -> dict[str, Path]:
    """Every input of the attempt as a checked file under ``scratch``, by name."""
    if not inputs:
        return {}
    folder = scratch / INPUTS_DIR
    folder.mkdir()
    paths: dict[str, Path] = {}
    for name, grant in sorted(inputs.items()):
        paths[name], received = _download(name, grant.url, folder / name, fetch=fetch, backoff=backoff)
        _check(name, grant, paths[name], received)
        log.info("input_downloaded", input=name, bytes=grant.bytes)
    return paths


def _download(
    name: str, url: str, path: Path, *, fetch: Fetch, backoff: Backoff
) -> tuple[Path, tuple[int, str] | None]:
    try:
        received = backoff.call("download_input", lambda: fetch(url, path))
    except errors.PijobsError:
        raise
    except Exception as exc:  # what the backoff gave up on: the operator's log has it
        raise errors.InputUnavailableError(f"input {name} could not be downloaded") from exc
    return path, received


def _check(name: str, pin: InputGrant, path: Path, received: tuple[int, str] | None) -> None:
    if received is None:
        whole = file_digest(path)
        received = whole.bytes, whole.sha256
    size, sha256 = received
    if not Digest(size, sha256).matches(pin.bytes, pin.sha256):
        log.error("input_corrupt", input=name, bytes=size, expected_bytes=pin.bytes, sha256=sha256)
        raise errors.InputCorruptError(
            f"input {name} does not match the upload the job was accepted with (size or sha256 differ)"
        )
