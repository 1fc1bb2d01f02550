"""What the pi engine computes at all, apart from the engine (gmpy2): the plug-in validates against it
without importing the engine, and the engine refuses anything past it."""

from __future__ import annotations

MAX_DIGITS = 100_000_000  # operators set a lower limit (PiLimits.max_digits)
