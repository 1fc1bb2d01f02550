"""``python -m pijobs.worker.pi N [--out FILE] [--workers K] [--verify] [--progress]``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import BinaryIO

from pijobs.worker.pi.engine import MAX_DIGITS, PiStats, compute_pi
from pijobs.worker.pi.verify import VerificationError, verify_file


def _digits(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= MAX_DIGITS:
        raise argparse.ArgumentTypeError(f"digits must be between 1 and {MAX_DIGITS:,}, got {value:,}")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"workers must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pijobs.worker.pi", description="Write '3.' and N digits of pi."
    )
    parser.add_argument("digits", type=_digits, help=f"number of decimals, 1..{MAX_DIGITS:,}")
    parser.add_argument("--out", help="output file (default: standard output)")
    parser.add_argument("--workers", type=_workers, help="processes to use (default: all cores)")
    parser.add_argument("--verify", action="store_true", help="recompute with MPFR and compare")
    parser.add_argument("--progress", action="store_true", help="print progress to standard error")
    return parser


def _report(fraction: float) -> None:
    print(f"\rprogress {fraction:6.1%}", end="\n" if fraction >= 1.0 else "", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace, out: BinaryIO) -> PiStats:
    return compute_pi(args.digits, out, workers=args.workers, progress=_report if args.progress else None)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.verify and args.out is None:
        parser.error("--verify needs --out FILE")
    try:
        if args.out is None:
            stats = _run(args, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            with open(args.out, "wb") as out:
                stats = _run(args, out)
    except OSError as exc:
        print(f"cannot write {args.out or 'standard output'}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(
        f"{stats.digits:,} digits in {stats.seconds:.3f} s with {stats.workers} worker(s): "
        f"series {stats.series:.3f} s, final {stats.final:.3f} s, convert {stats.convert:.3f} s, "
        f"write {stats.write:.3f} s; sha256 {stats.sha256}",
        file=sys.stderr,
    )
    if args.verify:
        started = time.perf_counter()
        try:
            verify_file(args.out, args.digits)
        except VerificationError as exc:
            print(f"verification FAILED: {exc}", file=sys.stderr)
            return 1
        print(f"verified against MPFR const_pi in {time.perf_counter() - started:.3f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
