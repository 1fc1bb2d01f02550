"""Size and sha256 of a stream, in one pass: how pijobs hashes a file, an upload, an input or a result.

A leaf module (the standard library only): the worker, the verifier, the API, the client and the command line
all count and hash through it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Digest:
    """What a stream held: its size and sha256 (hex). ``truncated``: reading stopped once more than a
    limit had arrived, so ``bytes`` is a lower bound and the digest is of that much only."""

    bytes: int
    sha256: str
    truncated: bool = False

    def matches(self, size: int, sha256: str) -> bool:
        """Exactly ``size`` bytes whose sha256 is ``sha256`` (either case)."""
        return not self.truncated and self.bytes == size and self.sha256 == sha256.lower()


class Hasher:
    """Counts and hashes what is passed through it, chunk by chunk."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.bytes = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self._sha.update(chunk)
        self.bytes += len(chunk)

    def digest(self, *, truncated: bool = False) -> Digest:
        return Digest(self.bytes, self._sha.hexdigest(), truncated)


def read_chunks(stream: IO[bytes] | Any, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """``stream.read(size)`` until it is exhausted (a file, an HTTP response)."""
    while chunk := stream.read(size):
        yield chunk


def digest_chunks(
    chunks: Iterable[bytes],
    *,
    limit: int | None = None,
    sink: Callable[[bytes], Any] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Digest:
    """Hash ``chunks`` as they stream, handing each to ``sink`` (e.g. a file's ``write``) and the running
    byte count to ``on_progress``. With ``limit``, stop once more than ``limit`` bytes arrived (an object
    larger than declared is refused however large it is, without reading all of it)."""
    hasher = Hasher()
    for chunk in chunks:
        hasher.update(chunk)
        if sink is not None:
            sink(chunk)
        if on_progress is not None:
            on_progress(hasher.bytes)
        if limit is not None and hasher.bytes > limit:
            return hasher.digest(truncated=True)
    return hasher.digest()


def file_digest(
    path: Path, *, chunk: int = CHUNK_BYTES, on_progress: Callable[[int], None] | None = None
) -> Digest:
    """Size and sha256 of a file, read once in chunks."""
    with path.open("rb") as stream:
        return digest_chunks(read_chunks(stream, chunk), on_progress=on_progress)
