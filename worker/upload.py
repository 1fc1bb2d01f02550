"""The job's result to storage through the presigned POST the worker channel answered ``output`` with.

The POST is good for exactly one key, size and sha256 (its policy's ``content-length-range`` and
``x-amz-checksum-sha256``); the platform checks the stored object again before the job may succeed. The
file is streamed (a multipart/form-data body of the policy's fields, then the file), never read whole.
"""

from __future__ import annotations

import secrets
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from pijobs.shared import errors

UPLOAD_TIMEOUT_SECONDS = 300
BLOCK = 1 << 20

# POSTs ``path`` with the form ``fields`` to ``url``; raises on anything but a 2xx.
Post = Callable[[str, Mapping[str, str], Path], None]


def post_file(url: str, fields: Mapping[str, str], path: Path) -> None:
    """POST the form ``fields`` and then the file, as S3's POST Object wants them. A refusal (4xx) is
    ResultUploadError at once; server errors and dropped connections are raised for the backoff to retry."""
    boundary = secrets.token_hex(16)
    head = b"".join(_field(boundary, name, value) for name, value in fields.items())
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = len(head) + path.stat().st_size + len(tail)

    def body() -> Iterator[bytes]:
        yield head
        with path.open("rb") as stream:
            while block := stream.read(BLOCK):
                yield block
        yield tail

    request = urllib.request.Request(
        url,
        data=body(),
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(size)},
    )
    try:
        with urllib.request.urlopen(request, timeout=UPLOAD_TIMEOUT_SECONDS) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        if 400 <= exc.code < 500 and exc.code not in (408, 429):
            raise errors.ResultUploadError(f"storage refused the result (HTTP {exc.code})") from exc
        raise


def _field(boundary: str, name: str, value: str) -> bytes:
    return f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
