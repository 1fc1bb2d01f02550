"""N digits of pi: Chudnovsky by binary splitting on gmpy2, spread over processes, streamed to a file.

The engine's names are imported on first use, so that ``pijobs.worker.pi.function`` (the business-function
plug-in, which the API imports to validate requests) needs neither gmpy2 nor the engine.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Estimate", "PiStats", "PiTooLargeError", "compute_pi", "estimate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("pijobs.worker.pi.engine"), name)
    raise AttributeError(f"module 'pijobs.worker.pi' has no attribute {name!r}")
