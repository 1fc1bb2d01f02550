"""The Chudnovsky series summed by binary splitting on gmpy2 integers.

    pi = 426880 * sqrt(10005) * Q(0, n) / T(0, n)

For a range of terms [a, b): P is the product of the numerators, Q of the denominators and T the series
numerator, so that two adjacent ranges merge as P = P1 P2, Q = Q1 Q2, T = T1 Q2 + P1 T2. About 18 bits of
each term's Q are factors of two; Q is kept odd with the power of two apart (P and T are odd), which makes
the products involving Q about a sixth smaller.

Only the ratios T/Q and P/Q matter, so a factor common to P, Q and T can be dropped at any node. A merge
has one for free: g = gcd(P1, Q2) divides P = P1 P2, Q = Q1 Q2 and T = T1 Q2 + P1 T2. P1 and Q2 are
products of runs of consecutive integers and share many small primes (15-45 % of Q2's bits), so cancelling
g in the lower levels leaves the sums at the top 16-26 % smaller, which makes the expensive top levels
cheaper (about 10 % off the series at 10^8 digits). Higher up, a gcd costs more than it saves.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

import gmpy2
from gmpy2 import mpz

A = 13591409
B = 545140134
C3_OVER_24 = 640320**3 // 24
_C3_OVER_24 = mpz(C3_OVER_24)
#: Each term adds log10(640320^3 / 12^3) ~ 14.18 correct decimal digits (47.11 bits).
DIGITS_PER_TERM = math.log10(640320**3 / 1728)
#: ... and shrinks P/Q by as many bits.
BITS_PER_TERM = math.log2(640320**3 / 1728)
#: Ranges this short are summed term by term on small integers instead of being split further.
LEAF_TERMS = 24
#: Merges of ranges up to this many terms first cancel gcd(P1, Q2) (see the module's docstring).
GCD_TERMS = 768
#: ... but only in series ranges of at least this many terms (about 280,000 digits): below, it does not pay.
GCD_MIN_TERMS = 20_000

#: P, the odd part of Q, T, and the exponent of two in Q.
Sums = tuple[mpz, mpz, mpz, int]
Tick = Callable[[int], None]
Mul = Callable[[mpz, mpz], mpz]


def terms_for(digits: int) -> int:
    """Number of terms that gives ``digits`` correct decimals plus a margin."""
    return int(digits / DIGITS_PER_TERM) + 3


def tail_precision(start: int, n: int, bits: int) -> int:
    """Relative precision in bits that T/Q of the terms [start, n) needs for pi to ``bits`` bits.

    That ratio w enters pi's Q/T as Q1 / (T1 + P1 w) (see fixed.tail_ratio), where T1/Q1 >= A/2,
    |P1/Q1| < 2**(-BITS_PER_TERM (start - 1)) (each term's ratio is below its limit 1728 / 640320^3) and
    |w| < A + B n. A relative error of 2**-p in w therefore moves the denominator by less than
    2**(log2(2 (A + B n) / A) - BITS_PER_TERM (start - 1) - p) of itself; 40 spare bits keep that far below
    the last of ``bits``.
    """
    spare = 40 + math.log2(2 * (A + B * n) / A)
    return max(64, math.ceil(bits + spare - (BITS_PER_TERM - 0.01) * (start - 1)))


def leaf(a: int, b: int) -> Sums:
    """The sums of the terms [a, b), one term at a time (the small factors come from C-level ranges)."""
    if a == 0:
        p, q, t = mpz(1), mpz(1), mpz(A)
        a = 1
    else:
        p, q, t = mpz(1), mpz(1), mpz(0)
    factors = zip(
        range(a, b),
        range(5 - 6 * a, 5 - 6 * b, -6),  # -(6k - 5)
        range(2 * a - 1, 2 * b - 1, 2),  # 2k - 1
        range(6 * a - 1, 6 * b - 1, 6),  # 6k - 1
        range(A + B * a, A + B * b, B),  # A + Bk
        strict=True,
    )
    for k, x, y, z, u in factors:
        p *= x * y * z
        qk = _C3_OVER_24 * (k * k * k)  # an mpz at once, not a Python int converted twice below
        t = t * qk + p * u
        q *= qk
    twos = q.bit_scan1()
    return p, q >> twos, t, twos


def merge(
    left: Sums, right: Sums, need_p: bool = True, reduce: bool = False, mul: Mul = operator.mul
) -> Sums:
    """Combine adjacent ranges; P is skipped (returned as 1) when nothing to the right needs it.

    With ``reduce``, the common factor of P1 and Q2 is cancelled first: the result is the same sums divided
    by it (the same ratios T/Q and P/Q, on smaller numbers). ``mul`` multiplies (e.g. over threads).
    """
    p1, q1, t1, e1 = left
    p2, q2, t2, e2 = right
    if reduce:
        g = gmpy2.gcd(p1, q2)
        if g != 1:
            p1, q2 = gmpy2.divexact(p1, g), gmpy2.divexact(q2, g)
    t = (mul(t1, q2) << e2) + mul(p1, t2)
    q = mul(q1, q2)
    return (mul(p1, p2) if need_p else mpz(1)), q, t, e1 + e2


def split(a: int, b: int, need_p: bool = True, tick: Tick | None = None, cancel: bool | None = None) -> Sums:
    """The sums of the terms [a, b) by binary splitting; ``tick(n)`` reports n more terms summed.

    ``cancel`` (by default: for ranges of at least GCD_MIN_TERMS terms) drops common factors in the lower
    merges; in a small series the top levels are too cheap for that to pay.
    """
    if cancel is None:
        cancel = b - a >= GCD_MIN_TERMS
    if b - a <= LEAF_TERMS:
        result = leaf(a, b)
        if tick is not None:
            tick(b - a)
        return result
    m = (a + b) // 2
    left = split(a, m, True, tick, cancel)
    right = split(m, b, need_p, tick, cancel)
    return merge(left, right, need_p, cancel and b - a <= GCD_TERMS)


def balanced_cuts(n: int, parts: int, last_extra: float = 0.0) -> list[int]:
    """Cut [0, n) into ``parts`` ranges of about equal time (a term's size grows like log k).

    The last range's work counts ``last_extra`` more (its process has more to do after the sum).
    """
    if parts <= 1 or n < parts * LEAF_TERMS:
        return [0, n]

    # Work of the terms [0, k) is about k * (log2 k + c); invert it numerically per cut.
    def work(k: int) -> float:
        return k * (3 * math.log2(max(k, 2)) + 60.0)

    share = work(n) / (parts - 1 + 1 / (1 + last_extra))  # the work of each range but the last
    cuts = [0]
    for i in range(1, parts):
        target = share * i
        lo, hi = cuts[-1], n
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if work(mid) < target:
                lo = mid
            else:
                hi = mid
        cuts.append(hi)
    cuts.append(n)
    return cuts
