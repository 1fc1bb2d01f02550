"""Binary fixed-point fraction -> decimal digits by a scaled remainder tree.

A fraction x in [0, 1) is held as ``frac / 2**bits`` with an absolute error of at most ``err / 2**bits``.
Multiplying by 10**L gives the next L digits (integer part) and the fraction of the rest; each half keeps
only the bits its own digits need. Only multiplications are used above the leaves (GMP's own conversion
divides, which costs several multiplications), and every truncation is checked against the error bound,
so the digits are exact or :class:`~pijobs.worker.pi.fixed.AmbiguousDigitsError` is raised.

10**L is 5**L shifted by L bits, so the tree multiplies by 5**L (30 % fewer bits than 10**L; the
conversion takes about 13 % less time) and shifts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from gmpy2 import mpz

from pijobs.worker.pi.fixed import AmbiguousDigitsError, precision_bits

#: Pieces this short are converted by GMP directly.
LEAF_DIGITS = 20_000

Emit = Callable[[bytes], object]


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

    def split(self, digits: int, power: mpz | None = None) -> Fraction:
        """The fraction left after the first ``digits`` decimals, to the precision the rest needs.

        ``power`` is 5**digits when the caller already has it.
        """
        _, rest, err = _scale(self, digits, power)
        return _cut(rest, self.bits, err, self.digits - digits)


def _cut(frac: mpz, bits: int, err: mpz, digits: int) -> Fraction:
    keep = min(bits, precision_bits(digits))
    shift = bits - keep
    return Fraction(frac >> shift, keep, int(err >> shift) + 2, digits)


def _scale(x: Fraction, digits: int, power: mpz | None = None) -> tuple[mpz, mpz, mpz]:
    """x * 10**digits, checked against its error bound: (y, rest, err).

    y / 2**(bits - digits) is x * 10**digits (10**digits is 5**digits shifted, ``power`` if given); rest is
    its fractional part in units of 2**-bits and err that part's error bound.
    """
    power = pow5(digits) if power is None else power
    y = x.frac * power
    rest = (y & ((mpz(1) << (x.bits - digits)) - 1)) << digits
    err = (x.err * power) << digits
    _check(rest, x.bits, err)
    return y, rest, err


def _check(rest: mpz, bits: int, err: mpz) -> None:
    if rest <= err or rest >= (mpz(1) << bits) - err:
        raise AmbiguousDigitsError("a value is within its error bound of a digit boundary")


@lru_cache(maxsize=64)
def pow5(n: int) -> mpz:
    """5**n (cached: the tree asks for the same few powers many times)."""
    return mpz(5) ** n


def emit_digits(x: Fraction, emit: Emit) -> None:
    """Emit the ``x.digits`` decimals of ``x`` as ASCII bytes, in order, in pieces."""
    if x.digits <= LEAF_DIGITS:
        y, _, _ = _scale(x, x.digits)
        emit((y >> (x.bits - x.digits)).digits().zfill(x.digits).encode("ascii"))
        return
    half = x.digits // 2
    emit_digits(x.narrowed(half), emit)
    emit_digits(x.split(half), emit)


#: Model of the conversion's cost, fitted on measurements: converting n digits costs about n**1.18, and
#: cutting a fraction at its middle (one multiplication by 5**(D/2)) about 0.4 of converting one half.
_CONVERT_EXPONENT = 1.18
_CUT_SHARE = 0.4


def piece_plan(digits: int, parts: int) -> list[tuple[int, int]]:
    """Cut ``digits`` into up to ``parts`` (offset, length) pieces that take about equally long to convert.

    Piece 0 converts its digits directly; every later piece first multiplies by 5**offset to reach its
    digits, so it gets fewer digits to convert. Pieces shorter than a leaf are not worth a process of their
    own.
    """
    if parts <= 1 or digits < 2 * LEAF_DIGITS:
        return [(0, digits)]

    def convert_cost(n: int) -> float:
        return float(n) ** _CONVERT_EXPONENT

    def cut_cost(offset: int, length: int) -> float:
        # Multiplying a fraction of (offset + length) digits by 5**offset, relative to a cut in the middle.
        middle = _CUT_SHARE * convert_cost(digits // 2)
        return middle * (2 * offset + length) / (1.5 * digits) if offset else 0.0

    def plan(budget: float) -> list[tuple[int, int]]:
        pieces: list[tuple[int, int]] = []
        offset = 0
        while offset < digits and len(pieces) < parts - 1:
            lo, hi = 0, digits - offset
            while lo < hi:  # the longest piece within the budget
                mid = (lo + hi + 1) // 2
                if cut_cost(offset, mid) + convert_cost(mid) <= budget:
                    lo = mid
                else:
                    hi = mid - 1
            if lo == 0:
                break
            pieces.append((offset, lo))
            offset += lo
        if offset < digits:
            pieces.append((offset, digits - offset))
        return pieces

    def last_cost(pieces: list[tuple[int, int]]) -> float:
        offset, length = pieces[-1]
        return cut_cost(offset, length) + convert_cost(length)

    lo_budget, hi_budget = 0.0, convert_cost(digits)
    for _ in range(60):  # the smallest budget whose last piece fits in it too
        budget = (lo_budget + hi_budget) / 2
        if last_cost(plan(budget)) <= budget:
            hi_budget = budget
        else:
            lo_budget = budget
    pieces = plan(hi_budget)
    if any(length < LEAF_DIGITS for _, length in pieces):
        return piece_plan(digits, parts - 1)
    return pieces
