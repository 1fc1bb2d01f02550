"""N digits of pi: Chudnovsky by binary splitting on gmpy2, spread over processes, streamed to a file."""

from worker.pi.engine import Estimate, PiStats, PiTooLargeError, compute_pi, estimate

__all__ = ["Estimate", "PiStats", "PiTooLargeError", "compute_pi", "estimate"]
