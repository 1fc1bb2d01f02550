"""Argument types the command groups share: a number within bounds, refused with the bounds named."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def number_in(
    low: float, high: float | None = None, *, kind: Callable[[str], float] = int
) -> Callable[[str], float]:
    """An argparse type: a number (``int`` or ``float``) in ``low..high`` (no upper bound when ``high`` is
    None)."""
    what = "a whole number" if kind is int else "a number"
    shown = str if kind is int else "{:g}".format

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < low or (high is not None and value > high):
            wanted = (
                f"must be at least {shown(low)}"
                if high is None
                else f"must be between {shown(low)} and {shown(high)}"
            )
            raise argparse.ArgumentTypeError(f"{wanted}, not {shown(value)}")
        return value

    return parse
