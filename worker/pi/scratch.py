"""Big values between processes through files in memory-backed scratch space.

A multiprocessing pipe moves about 120 MiB/s here (64 KiB at a time), which costs seconds at 10^8 digits;
a file on tmpfs is a memory copy. Worker processes write a result and return its name; the parent reads it
back (or streams it, for digits) and deletes it. The whole directory goes when the computation ends.
The directory is made in /dev/shm, or where the environment variable PIJOBS_PI_SCRATCH points. Its name
carries the owner's process id: a process killed outright (SIGKILL) cannot clean up, so each new scratch
space first removes those whose owner is gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gmpy2
from gmpy2 import mpz

#: Memory-backed on Linux; elsewhere the system's temporary directory.
_SHM = "/dev/shm"
#: Names another directory for the scratch space (e.g. to watch how much it holds).
ROOT_VARIABLE = "PIJOBS_PI_SCRATCH"
_PREFIX = "pi-scratch-"


@dataclass(frozen=True)
class Scratch:
    """A directory of single-use files (picklable: the parent and its workers share it by name)."""

    directory: str

    @classmethod
    def create(cls) -> Scratch:
        root = os.environ.get(ROOT_VARIABLE) or (
            _SHM if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK) else tempfile.gettempdir()
        )
        _remove_orphans(root)
        return cls(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=root))

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def put(self, data: bytes) -> str:
        """Store ``data`` in a new file; returns its path."""
        return self.put_stream(lambda write: write(data))

    def put_stream(self, fill: Callable[[Callable[[bytes], object]], object]) -> str:
        """A new file that ``fill(write)`` writes piece by piece (no copy of the whole); returns its path."""
        fd, path = tempfile.mkstemp(dir=self.directory)
        with os.fdopen(fd, "wb") as f:
            fill(f.write)
        return path

    def put_mpz(self, x: mpz) -> str:
        return self.put(gmpy2.to_binary(x))

    @staticmethod
    def take(path: str) -> bytes:
        """The file's bytes; the file is deleted."""
        try:
            with open(path, "rb") as f:
                return f.read()
        finally:
            os.unlink(path)

    @classmethod
    def take_mpz(cls, path: str) -> mpz:
        return gmpy2.from_binary(cls.take(path))

    @staticmethod
    def stream(path: str, chunk: int) -> Iterator[bytes]:
        """The file's bytes in slices of ``chunk``; the file is deleted once read (or abandoned)."""
        try:
            with open(path, "rb") as f:
                while data := f.read(chunk):
                    yield data
        finally:
            os.unlink(path)


def _remove_orphans(root: str) -> None:
    """Remove the scratch directories in ``root`` whose owner process no longer exists."""
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        owner = name[len(_PREFIX) :].split("-", 1)[0]
        if name.startswith(_PREFIX) and owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
