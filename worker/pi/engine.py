"""compute_pi: N decimals of pi, streamed to a binary file, with timings, a checksum and a memory guard."""

from __future__ import annotations

import itertools
import math
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from typing import Any, BinaryIO, TypeVar

from gmpy2 import mpz

from pijobs.shared.digest import Hasher
from pijobs.worker.pi import chudnovsky, convert, fixed
from pijobs.worker.pi.bounds import MAX_DIGITS
from pijobs.worker.pi.scratch import Scratch

#: Below this many digits one process is faster than starting a pool.
POOL_MIN_DIGITS = 400_000
#: Output is written in slices of this size.
WRITE_CHUNK = 1 << 20
#: Share of the progress bar per phase (series, final step, conversion and writing): about the share of the
#: time each takes on 2 cores (3 to 20 million digits: 55-60 %, 15-20 %, 20-25 %).
SERIES_SHARE, FINAL_SHARE = 0.6, 0.15
#: Summed terms a pool process counts before it adds them to the shared counter.
TICK_BATCH = 4096
#: How far into its span a phase's bar moves by its expected end on time alone (see _Progress._crept).
PHASE_CREEP = 0.8

ProgressFn = Callable[[float], None]
T = TypeVar("T")


class PiTooLargeError(ValueError):
    """The request would need more memory than the caller allows."""


@dataclass(frozen=True)
class Estimate:
    """Expected wall time (2 cores) and peak resident memory of all processes together."""

    seconds: float
    peak_memory_bytes: int


@dataclass(frozen=True)
class PiStats:
    """What one compute_pi call did; ``sha256`` covers exactly the bytes it wrote."""

    digits: int
    bytes_written: int
    sha256: str
    seconds: float
    series: float
    final: float
    convert: float
    write: float
    workers: int
    peak_rss_bytes: int | None


def estimate(digits: int) -> Estimate:
    """Wall time on 2 otherwise idle cores and peak memory of all processes, fitted on measurements.

    Time ~ 2.8e-8 s * digits**1.195 (within about 30 % from 10^4 to 10^8 digits on the development machine);
    memory ~ 80 MiB + 25 bytes per digit, a little above every measured peak (docs/pi.md).
    """
    _check_digits(digits)
    return Estimate(seconds=2.8e-8 * digits**1.195, peak_memory_bytes=80 * 2**20 + 25 * digits)


def compute_pi(
    digits: int,
    out: BinaryIO,
    *,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    memory_limit_bytes: int | None = None,
    start_method: str | None = None,
) -> PiStats:
    """Write b"3." and ``digits`` decimals of pi to ``out`` (truncated, not rounded).

    ``start_method`` is how the worker processes start (multiprocessing's "fork", "spawn" or "forkserver");
    by default fork while this process runs a single thread (on Linux), spawn otherwise.
    """
    _check_digits(digits)
    _check_memory(digits, memory_limit_bytes)
    count = resolve_workers(digits, workers)
    run = _Run(digits, out, _Progress(progress))
    with _workers(count, start_method) as pool, _Threads(count, run.progress, pool) as threads:
        run.compute(pool, threads)
    return run.stats(count)


def resolve_workers(digits: int, workers: int | None) -> int:
    """Processes to use: all cores by default, one below the size where a pool pays off."""
    if workers is not None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        return workers
    if digits < POOL_MIN_DIGITS:
        return 1
    return _cpu_count()


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _check_digits(digits: int) -> None:
    if isinstance(digits, bool) or not isinstance(digits, int):
        raise ValueError(f"digits must be an integer, got {digits!r}")
    if not 1 <= digits <= MAX_DIGITS:
        raise ValueError(f"digits must be between 1 and {MAX_DIGITS:,}, got {digits:,}")


def _check_memory(digits: int, limit: int | None) -> None:
    if limit is None:
        return
    need = estimate(digits).peak_memory_bytes
    if need > limit:
        raise PiTooLargeError(
            f"{digits:,} digits of pi need about {need / 2**20:,.0f} MiB of memory, "
            f"more than the limit of {limit / 2**20:,.0f} MiB"
        )


class _Progress:
    """Rate-limited, monotonic progress reporting; the callback's exceptions propagate.

    A phase with no counter of its own (the final division and square root, the merges of the series, the
    conversion in the pool's processes) would hold the bar still for seconds: within a ``phase`` the value
    also moves with the time the phase is expected to take (``_crept``), so it moves at each report and never
    claims the phase's end before the phase has ended.
    """

    def __init__(self, callback: ProgressFn | None) -> None:
        self._callback = callback
        self._sent = -1.0
        self._sent_at = 0.0
        self.value = 0.0
        self._phase = (0.0, 0.0, 0.0, 0.0)  # start value, end value, started at, expected seconds

    def phase(self, start: float, end: float, expected_seconds: float) -> None:
        """From now on the value is at least ``start`` and creeps to ``end`` over ``expected_seconds``."""
        self._phase = (start, end, time.monotonic(), max(expected_seconds, 1e-3))
        self.set(start)

    def _crept(self, now: float) -> float:
        """Linear up to ``PHASE_CREEP`` of the span at the expected end, then ever slower towards 97 %: a busy
        machine that takes longer than expected still sees the bar move."""
        start, end, began, expected = self._phase
        ratio = (now - began) / expected
        if ratio <= 1.0:
            share = PHASE_CREEP * ratio
        else:
            share = PHASE_CREEP + (0.97 - PHASE_CREEP) * (1.0 - math.exp(1.0 - ratio))
        return start + (end - start) * share

    @property
    def wanted(self) -> bool:
        """Whether anyone listens (without a callback, callers can skip the bookkeeping)."""
        return self._callback is not None

    def set(self, fraction: float) -> None:
        self.value = min(1.0, max(self.value, fraction))
        self.poll()

    def poll(self) -> None:
        """Report the current value if enough progress or time has passed since the last report."""
        if self._callback is None:
            return
        now = time.monotonic()
        self.value = min(1.0, max(self.value, self._crept(now)))
        if self.value >= 1.0 > self._sent or self.value - self._sent >= 0.01 or now - self._sent_at >= 0.2:
            self._sent, self._sent_at = self.value, now
            self._callback(self.value)


class _Threads:
    """Helper threads for GIL-free big arithmetic; the calling thread keeps reporting progress meanwhile."""

    def __init__(self, count: int, progress: _Progress, pool: _Processes | None) -> None:
        self.executor = ThreadPoolExecutor(max_workers=count) if count > 1 else None
        self._progress = progress
        self._pool = pool

    def __enter__(self) -> _Threads:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=exc[0] is None, cancel_futures=True)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in a helper thread (inline with one worker), polling progress while it runs."""
        if self.executor is None:
            return fn(*args)
        return self.wait(self.executor.submit(_released, fn, *args))

    def wait(self, future: Future[T]) -> T:
        while not future.done():
            self._progress.poll()
            if self._pool is not None:
                self._pool.check()
            futures_wait([future], timeout=0.1)
        self._progress.poll()
        return future.result()


def _released(fn: Callable[..., T], *args: Any) -> T:
    fixed.release_gil()
    return fn(*args)


class _Processes:
    """A process pool, its processes killed on an early exit, that notices a worker that died (e.g. out of
    memory): the pending tasks then fail at once (a ProcessPoolExecutor breaks; it never starts a
    replacement, so nothing forks from this threaded process after the start, and no dead worker can leave a
    lock held that shutting down would wait for).

    Big results travel through files in ``scratch`` (see pijobs.worker.pi.scratch), removed on exit.
    """

    def __init__(self, count: int, start_method: str | None = None) -> None:
        ctx = get_context(start_method or _start_method())
        self.count = count
        self.terms_done = ctx.Value("q", 0)
        self.scratch = Scratch.create()
        self._executor = ProcessPoolExecutor(
            count, mp_context=ctx, initializer=_init_worker, initargs=(self.terms_done, self.scratch)
        )
        self._submitted: list[Future[Any]] = []

    def __enter__(self) -> _Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is not None:  # tasks may still run: end them rather than wait for them
                self._kill_workers()
            self._executor.shutdown(wait=True, cancel_futures=True)
        finally:
            self.scratch.remove()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        future = self._executor.submit(fn, *args)
        self._submitted.append(future)
        return future

    def check(self) -> None:
        """Raise if a worker process died: every task that was not done fails then."""
        for future in self._submitted:
            if future.done() and not future.cancelled() and isinstance(future.exception(), BrokenProcessPool):
                raise _died(future.exception())

    def _kill_workers(self) -> None:
        # The executor has no public way to end running tasks (terminate_workers() comes in Python 3.14).
        processes = getattr(self._executor, "_processes", None) or {}
        for process in list(processes.values()):
            if process.exitcode is None:
                process.kill()


def _died(cause: BaseException | None) -> RuntimeError:
    error = RuntimeError("a pi worker process died (killed, or out of memory?)")
    error.__cause__ = cause
    return error


@contextmanager
def _workers(count: int, start_method: str | None) -> Iterator[_Processes | None]:
    """A process pool, or None for one process."""
    if count <= 1:
        yield None
        return
    with _Processes(count, start_method) as processes:
        try:
            yield processes
        except BrokenProcessPool as exc:
            raise _died(exc) from exc


def _start_method() -> str:
    """fork is cheap but only safe while this process runs a single thread; spawn otherwise."""
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return "fork"
    return "spawn"


_terms_done: Any = None
_scratch: Scratch | None = None


def _init_worker(counter: Any, scratch: Scratch) -> None:
    global _terms_done, _scratch
    _terms_done, _scratch = counter, scratch
    # A forked worker inherits the parent's Python signal handlers (the job worker turns SIGTERM into an
    # exception): ending it early (SIGTERM, from a shutdown) must take the default action.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _TermCounter:
    """Adds summed terms to the shared counter in batches (cheap enough to call at every leaf)."""

    def __init__(self) -> None:
        self.pending = 0

    def __call__(self, n: int) -> None:
        self.pending += n
        if self.pending >= TICK_BATCH:
            self.flush()

    def flush(self) -> None:
        if _terms_done is not None and self.pending:
            with _terms_done.get_lock():
                _terms_done.value += self.pending
        self.pending = 0


def _worker_scratch() -> Scratch:
    assert _scratch is not None, "not in a pi worker process"
    return _scratch


def _series_task(a: int, b: int) -> tuple[str, str, str, int]:
    """The sums of the terms [a, b), stored in scratch files."""
    ticks = _TermCounter()
    try:
        p, q, t, twos = chudnovsky.split(a, b, True, ticks)
    finally:
        ticks.flush()
    scratch = _worker_scratch()
    return scratch.put_mpz(p), scratch.put_mpz(q), scratch.put_mpz(t), twos


def _tail_task(a: int, b: int, precision: int) -> tuple[str, int]:
    """T/Q of the last terms [a, b) (see fixed.tail_ratio), stored in a scratch file, and its exponent."""
    ticks = _TermCounter()
    try:
        sums = chudnovsky.split(a, b, False, ticks)
    finally:
        ticks.flush()
    w, exponent = fixed.tail_ratio(sums, precision)
    return _worker_scratch().put_mpz(w), exponent


def _sqrt_task(bits: int, power_digits: int) -> tuple[str, str | None]:
    """sqrt(10005) 2**bits and, with the time left while the parent still divides, 5**power_digits."""
    scratch = _worker_scratch()
    root = scratch.put_mpz(fixed.sqrt_10005(bits))
    return root, scratch.put_mpz(mpz(5) ** power_digits) if power_digits else None


def _piece_task(frac: str, bits: int, err: int, digits: int, offset: int, power: str | None) -> str:
    """The decimals after the first ``offset`` of the fraction in the scratch file ``frac``.

    This process cuts off the first ``offset`` decimals itself, with 5**offset from the scratch file ``power``
    if given; returns the scratch file that holds the digits.
    """
    x = convert.Fraction(Scratch.take_mpz(frac), bits, err, digits)
    try:
        if offset:
            x = x.split(offset, None if power is None else Scratch.take_mpz(power))
        return _worker_scratch().put_stream(lambda write: convert.emit_digits(x, write))
    finally:
        convert.pow5.cache_clear()


def _take_sums(paths: tuple[str, str, str, int]) -> chudnovsky.Sums:
    p, q, t, twos = paths
    return Scratch.take_mpz(p), Scratch.take_mpz(q), Scratch.take_mpz(t), twos


class _Run:
    """One computation: the phases, their timings and the output stream."""

    def __init__(self, digits: int, out: BinaryIO, progress: _Progress) -> None:
        self.digits = digits
        self.out = out
        self.progress = progress
        self.hasher = Hasher()  # what was written: its size and sha256
        self.start = time.perf_counter()
        self.times = {"series": 0.0, "final": 0.0, "convert": 0.0, "write": 0.0}
        self._terms_summed_at: float | None = None

    def compute(self, pool: _Processes | None, threads: _Threads) -> None:
        bits = fixed.precision_bits(self.digits)
        n = chudnovsky.terms_for(self.digits + fixed.GUARD_BITS)
        expected = _expected_seconds(self.digits, pool)
        self.progress.phase(0.0, SERIES_SHARE, expected * SERIES_SHARE)
        t0 = time.perf_counter()
        if pool is None:
            q, t = self._series_serial(n, bits)
        else:
            q, t = self._series_parallel(pool, threads, n, bits)
        t1 = time.perf_counter()
        self.times["series"] = t1 - t0
        # The rest takes what the model says, scaled by how the series went against it on this machine.
        pace = self.times["series"] / max(expected * SERIES_SHARE, 1e-3)
        self.progress.phase(SERIES_SHARE, SERIES_SHARE + FINAL_SHARE, expected * FINAL_SHARE * pace)
        # The root goes to a worker while the parent divides; it takes less time, so that worker then also
        # computes the power of five the last conversion piece starts with.
        plan = convert.piece_plan(self.digits, pool.count if pool is not None else 1)
        power: str | None = None
        if pool is None:
            ratio = threads.run(fixed.quotient, q, t, bits)
            sqrt_part = fixed.sqrt_10005(bits)
        else:
            sqrt_job = pool.submit(_sqrt_task, bits, plan[-1][0])
            ratio = threads.run(fixed.quotient, q, t, bits)
            root, power = threads.wait(sqrt_job)
            sqrt_part = Scratch.take_mpz(root)
        del q, t
        value = threads.run(fixed.pi_fixed, ratio, sqrt_part, bits, threads.executor)
        del ratio, sqrt_part
        self.times["final"] = time.perf_counter() - t1
        rest = 1.0 - SERIES_SHARE - FINAL_SHARE
        self.progress.phase(SERIES_SHARE + FINAL_SHARE, 1.0, expected * rest * pace)
        frac = convert.Fraction(value - (3 << bits), bits, 3, self.digits)
        del value
        self._emit_all(pool, threads, frac, plan, power)

    def _series_serial(self, n: int, bits: int) -> tuple[mpz, mpz]:
        done = 0

        def tick(k: int) -> None:
            nonlocal done
            done += k
            self.progress.set(SERIES_SHARE * done / n)

        m = n // 2
        ticks = tick if self.progress.wanted else None
        left = chudnovsky.split(0, m, True, ticks)
        tail_bits = chudnovsky.tail_precision(m, n, bits)
        tail = fixed.tail_ratio(chudnovsky.split(m, n, False, ticks), tail_bits)
        return fixed.head_ratio(left, tail, bits, tail_bits, None)

    def _series_parallel(self, pool: _Processes, threads: _Threads, n: int, bits: int) -> tuple[mpz, mpz]:
        """The series: one range per process, the last of which also divides out its T/Q; merged here."""
        cuts = chudnovsky.balanced_cuts(n, pool.count, _tail_extra_work(self.digits))
        if len(cuts) == 2:  # too few terms to share out; still two ranges, as the tail ratio needs
            cuts = [0, n // 2, n]
        tail_bits = chudnovsky.tail_precision(cuts[-2], n, bits)
        jobs = [pool.submit(_series_task, a, b) for a, b in itertools.pairwise(cuts[:-1])]
        tail_job = pool.submit(_tail_task, cuts[-2], n, tail_bits)
        parts = [_take_sums(self._await_series(pool, job, n)) for job in jobs]  # read while the rest runs
        path, exponent = self._await_series(pool, tail_job, n)
        tail = Scratch.take_mpz(path), exponent
        threaded_mul = partial(fixed.mul, pool=threads.executor)
        while len(parts) > 1:
            merged = [
                threads.run(chudnovsky.merge, parts[i], parts[i + 1], True, False, threaded_mul)
                for i in range(0, len(parts) - 1, 2)
            ]
            parts = merged + parts[len(parts) - len(parts) % 2 :]
        q, t = threads.run(fixed.head_ratio, parts[0], tail, bits, tail_bits, threads.executor)
        self.progress.set(SERIES_SHARE)
        return q, t

    def _await_series(self, pool: _Processes, job: Future[T], n: int) -> T:
        """The job's result; meanwhile reports the terms summed so far and watches the workers.

        Every term is summed well before the series ends: the processes' last products, the tail's division
        and the merges here take about a fifth of its time more, which the bar spends creeping.
        """
        while not job.done():
            done = pool.terms_done.value
            self.progress.set(SERIES_SHARE * 0.9 * done / n)
            if done >= n - TICK_BATCH * pool.count and self._terms_summed_at is None:  # all but the unsent
                self._terms_summed_at = time.perf_counter()
                elapsed = self._terms_summed_at - self.start
                self.progress.phase(SERIES_SHARE * 0.9, SERIES_SHARE, elapsed / 4)
            pool.check()
            futures_wait([job], timeout=0.1)
        return job.result()

    def _emit_all(
        self,
        pool: _Processes | None,
        threads: _Threads,
        frac: convert.Fraction,
        plan: list[tuple[int, int]],
        last_power: str | None,
    ) -> None:
        """Convert and write the digits; with processes, one piece each, written in order as they arrive."""
        t0 = time.perf_counter()
        self._write(b"3.")
        if pool is None:
            convert.emit_digits(frac, self._write)
        else:
            # One piece per process, each cutting off the digits before it itself (a multiplication by a power
            # of five), so the later pieces are shorter; written in order as they arrive.
            jobs = []
            for i, (offset, length) in enumerate(plan):
                piece = frac.narrowed(offset + length)
                path = pool.scratch.put_mpz(piece.frac)
                power = last_power if i == len(plan) - 1 else None
                args = (path, piece.bits, piece.err, piece.digits, offset, power)
                jobs.append(pool.submit(_piece_task, *args))
            del frac, piece
            for job in jobs:
                for chunk in Scratch.stream(threads.wait(job), WRITE_CHUNK):
                    self._write(chunk)
        convert.pow5.cache_clear()
        self.times["convert"] = time.perf_counter() - t0 - self.times["write"]

    def _write(self, data: bytes) -> None:
        t0 = time.perf_counter()
        view = memoryview(data)
        for i in range(0, len(view), WRITE_CHUNK):
            chunk = view[i : i + WRITE_CHUNK]
            self.out.write(chunk)
            self.hasher.update(chunk)
            share = SERIES_SHARE + FINAL_SHARE
            self.progress.set(share + (1 - share) * min(1.0, self.hasher.bytes / (self.digits + 2)) * 0.999)
        self.times["write"] += time.perf_counter() - t0

    def stats(self, workers: int) -> PiStats:
        self.progress.set(1.0)
        return PiStats(
            digits=self.digits,
            bytes_written=self.hasher.bytes,
            sha256=self.hasher.digest().sha256,
            seconds=time.perf_counter() - self.start,
            series=self.times["series"],
            final=self.times["final"],
            convert=self.times["convert"],
            write=self.times["write"],
            workers=workers,
            peak_rss_bytes=_peak_rss(),
        )


def _expected_seconds(digits: int, pool: _Processes | None) -> float:
    """The whole computation's expected wall time (``estimate``, fitted on 2 cores), for progress only."""
    seconds = estimate(digits).seconds
    return seconds * 2 if pool is None else seconds * 2 / max(2, pool.count)


def _tail_extra_work(digits: int) -> float:
    """How much more the last series range's process has to do than the work model says, as a fraction.

    It also divides out its T/Q (11 % of its summing at 10^6 digits, 8 % at 10^8), and the model slightly
    underrates the later terms. Fitted so that both processes of a 2-core run finish together: 0.12 up to
    10^7 digits, 0.09 at 10^8.
    """
    return 0.12 - 0.03 * min(1.0, max(0.0, math.log10(digits) - 7))


def _peak_rss() -> int | None:
    """High-water resident memory of this process plus the largest finished child, in bytes."""
    unit = 1 if sys.platform == "darwin" else 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) * unit
