"""Binary fixed-point fraction -> decimal digits by a scaled remainder tree.

A fraction x in [0, 1) is held as ``frac / 2**bits`` with an absolute error of at most ``err / 2**bits``.
Multiplying by 10**L gives the next L digits (integer part) and the fraction of the rest; each half keeps
only the bits its own digits need. Only multiplications are used above the leaves (GMP's own conversion
divides, which costs several multiplications), and every truncation is checked against the error bound,
so the digits are exact or :class:`~worker.pi.fixed.AmbiguousDigitsError` is raised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from gmpy2 import mpz

from worker.pi.fixed import AmbiguousDigitsError, precision_bits

#: Pieces this short are converted by GMP directly.
LEAF_DIGITS = 20_000

Emit = Callable[[bytes], None]


@dataclass(frozen=True)
class Fraction:
    """``frac / 2**bits`` approximates a number in [0, 1) within ``err / 2**bits``; ``digits`` are wanted."""

    frac: mpz
    bits: int
    err: int
    digits: int

    def narrowed(self, digits: int) -> Fraction:
        """The same number to the precision its first ``digits`` decimals need."""
        return _cut(self.frac, self.bits, mpz(self.err), digits)

    def split(self, digits: int) -> Fraction:
        """The fraction left after the first ``digits`` decimals, to the precision the rest needs."""
        y = self.frac * pow10(digits)
        rest = y & ((mpz(1) << self.bits) - 1)
        err = self.err * pow10(digits)
        _check(rest, self.bits, err)
        return _cut(rest, self.bits, err, self.digits - digits)


def _cut(frac: mpz, bits: int, err: mpz, digits: int) -> Fraction:
    keep = min(bits, precision_bits(digits))
    shift = bits - keep
    return Fraction(frac >> shift, keep, int(err >> shift) + 2, digits)


def _check(rest: mpz, bits: int, err: mpz) -> None:
    if rest <= err or rest >= (mpz(1) << bits) - err:
        raise AmbiguousDigitsError("a value is within its error bound of a digit boundary")


@lru_cache(maxsize=64)
def pow10(n: int) -> mpz:
    """10**n (cached: the tree asks for the same few powers many times)."""
    return mpz(10) ** n


def emit_digits(x: Fraction, emit: Emit) -> None:
    """Emit the ``x.digits`` decimals of ``x`` as ASCII bytes, in order, in pieces."""
    if x.digits <= LEAF_DIGITS:
        y = x.frac * pow10(x.digits)
        _check(y & ((mpz(1) << x.bits) - 1), x.bits, x.err * pow10(x.digits))
        emit((y >> x.bits).digits().zfill(x.digits).encode("ascii"))
        return
    half = x.digits // 2
    emit_digits(x.narrowed(half), emit)
    emit_digits(x.split(half), emit)


def fraction_bytes(x: Fraction) -> bytes:
    """All the decimals of ``x`` as one bytes object (what a worker process sends back)."""
    parts: list[bytes] = []
    emit_digits(x, parts.append)
    return b"".join(parts)
