"""Independent check: MPFR's const_pi (a different algorithm) at sufficient precision."""

from __future__ import annotations

import math

import gmpy2


class VerificationError(Exception):
    """The digits differ from MPFR's."""


def reference_digits(digits: int) -> bytes:
    """b"3." and ``digits`` decimals of pi from MPFR, truncated (not rounded)."""
    with gmpy2.context(gmpy2.get_context(), precision=math.ceil(digits * math.log2(10)) + 96):
        scaled = gmpy2.floor(gmpy2.const_pi() * gmpy2.mpz(10) ** digits)
    text = gmpy2.mpz(scaled).digits()
    return b"3." + text[1:].encode("ascii")


def verify_bytes(data: bytes, digits: int) -> None:
    """Raise VerificationError unless ``data`` is exactly b"3." and the first ``digits`` decimals of pi."""
    expected = reference_digits(digits)
    if data == expected:
        return
    if len(data) != len(expected):
        raise VerificationError(f"expected {len(expected):,} bytes, got {len(data):,}")
    first = next(i for i, (a, b) in enumerate(zip(data, expected, strict=True)) if a != b)
    raise VerificationError(f"first difference at byte {first:,} (decimal {first - 1:,})")


def verify_file(path: str, digits: int) -> None:
    """verify_bytes on a file's whole content."""
    with open(path, "rb") as f:
        verify_bytes(f.read(), digits)
