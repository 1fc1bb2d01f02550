"""The pi engine: digits against mpmath and known values, streaming, progress, workers, limits, CLI."""

from __future__ import annotations

import hashlib
import io
import itertools
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import gmpy2
import mpmath
import pytest
from gmpy2 import mpz

from pijobs.worker.pi import (
    Estimate,
    PiStats,
    PiTooLargeError,
    chudnovsky,
    compute_pi,
    convert,
    engine,
    estimate,
    fixed,
    scratch,
)
from pijobs.worker.pi.verify import VerificationError, verify_bytes

REPO = Path(__file__).resolve().parents[2]
REFERENCE_DIGITS = 100_050
PI_50 = b"3.14159265358979323846264338327950288419716939937510"


@pytest.fixture(scope="module")
def reference() -> bytes:
    """b"3." and the first REFERENCE_DIGITS decimals of pi from mpmath (truncated)."""
    with mpmath.workdps(REFERENCE_DIGITS + 30):
        text = mpmath.nstr(mpmath.mp.pi, REFERENCE_DIGITS + 20, strip_zeros=False)
    return text[: REFERENCE_DIGITS + 2].encode("ascii")


def run(digits: int, **kwargs: object) -> tuple[bytes, PiStats]:
    out = io.BytesIO()
    stats = compute_pi(digits, out, **kwargs)  # type: ignore[arg-type]
    return out.getvalue(), stats


EDGE_SIZES = [1, 2, 9, 10, 11, 100, 1000, 12345]
LEAF_SIZES = [convert.LEAF_DIGITS + d for d in (-1, 0, 1)] + [2 * convert.LEAF_DIGITS + 1, 100_000]


@pytest.mark.parametrize("digits", EDGE_SIZES + LEAF_SIZES)
def test_digits_match_mpmath(reference: bytes, digits: int) -> None:
    data, stats = run(digits)
    assert data == reference[: digits + 2]
    assert stats.digits == digits
    assert stats.bytes_written == digits + 2


def test_known_prefix() -> None:
    assert run(50)[0] == PI_50


def test_last_ten_digits_of_a_million() -> None:
    data, stats = run(1_000_000)
    assert len(data) == 1_000_002
    assert data[-10:] == b"5779458151"
    assert stats.sha256 == hashlib.sha256(data).hexdigest()


def test_sha256_covers_only_the_bytes_written_after_a_header() -> None:
    out = io.BytesIO()
    out.write(b"header\n")
    stats = compute_pi(1000, out)
    body = out.getvalue()[len(b"header\n") :]
    assert out.getvalue().startswith(b"header\n")
    assert stats.sha256 == hashlib.sha256(body).hexdigest()
    assert stats.bytes_written == len(body) == 1002


def test_small_write_chunks_give_the_same_bytes(reference: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "WRITE_CHUNK", 7)
    data, stats = run(5000)
    assert data == reference[:5002]
    assert stats.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_is_monotonic_and_ends_at_one(workers: int) -> None:
    seen: list[float] = []
    run(200_000, workers=workers, progress=seen.append)
    assert seen
    assert seen == sorted(seen)
    assert all(0.0 <= f <= 1.0 for f in seen)
    assert seen[-1] == 1.0
    assert len(seen) <= 200


def test_progress_moves_through_every_phase_of_a_pool_run() -> None:
    # The final division and square root and the pool's conversion have no counter of their own: before,
    # the bar sat at 60 % through the first and jumped to 75 %. Now it reports values inside each phase.
    seen: list[float] = []
    run(5_000_000, workers=2, progress=seen.append)
    series, final, rest = engine.SERIES_SHARE, engine.SERIES_SHARE + engine.FINAL_SHARE, 1.0
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert [f for f in seen if 0.0 < f < series]
    assert [f for f in seen if series < f < final]
    assert [f for f in seen if final < f < rest]


def test_a_phase_creeps_with_time_and_never_claims_its_end(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(engine.time, "monotonic", lambda: clock[0])
    seen: list[float] = []
    progress = engine._Progress(seen.append)

    progress.phase(0.0, 0.6, expected_seconds=10.0)
    readings = []
    for elapsed in (5.0, 10.0, 20.0, 100.0, 10_000.0):
        clock[0] = 100.0 + elapsed
        progress.poll()
        readings.append(progress.value)

    assert readings[0] == pytest.approx(0.6 * engine.PHASE_CREEP / 2)  # on time: linear
    assert readings[1] == pytest.approx(0.6 * engine.PHASE_CREEP)
    assert readings == sorted(readings) and len(set(readings)) == len(readings)  # late: still moving
    assert readings[-1] < 0.6
    progress.set(0.6)  # the phase's own end
    assert progress.value == 0.6


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_exceptions_propagate(workers: int) -> None:
    class Cancelled(Exception):
        pass

    def cancel(fraction: float) -> None:
        if fraction > 0.3:
            raise Cancelled

    with pytest.raises(Cancelled):
        run(300_000, workers=workers, progress=cancel)


def test_two_workers_equal_one(reference: bytes) -> None:
    one, stats_one = run(100_000, workers=1)
    two, stats_two = run(100_000, workers=2)
    assert one == two == reference[:100_002]
    assert (stats_one.workers, stats_two.workers) == (1, 2)
    assert stats_one.sha256 == stats_two.sha256


@pytest.mark.parametrize("workers", [3, 4])
def test_more_pieces_than_two_give_the_same_digits(reference: bytes, workers: int) -> None:
    data, stats = run(100_000, workers=workers)
    assert data == reference[:100_002]
    assert stats.workers == workers


@pytest.mark.parametrize("digits", [2 * convert.LEAF_DIGITS, 400_000, 10_000_000, 100_000_000])
@pytest.mark.parametrize("parts", [1, 2, 3, 8])
def test_conversion_pieces_cover_the_digits_in_order(digits: int, parts: int) -> None:
    plan = convert.piece_plan(digits, parts)
    assert 1 <= len(plan) <= parts
    assert plan[0][0] == 0
    assert all(offset + length == following for (offset, length), (following, _) in itertools.pairwise(plan))
    assert sum(length for _, length in plan) == digits
    assert all(length >= convert.LEAF_DIGITS for _, length in plan)
    # Later pieces first cut off the digits before them, so they get fewer digits to convert.
    assert [length for _, length in plan] == sorted((length for _, length in plan), reverse=True)


def test_conversion_pieces_for_two_processes_lean_to_the_first() -> None:
    (_, first), (_, second) = convert.piece_plan(10_000_000, 2)
    assert 0.52 < first / 10_000_000 < 0.68
    assert first + second == 10_000_000


def test_small_conversions_are_one_piece() -> None:
    assert convert.piece_plan(2 * convert.LEAF_DIGITS - 1, 4) == [(0, 2 * convert.LEAF_DIGITS - 1)]


def test_cancelling_common_factors_keeps_ratios_and_shrinks_sums() -> None:
    a, b = 5_000, 5_000 + chudnovsky.GCD_MIN_TERMS
    p, q, t, twos = chudnovsky.split(a, b)
    p0, q0, t0, twos0 = chudnovsky.split(a, b, cancel=False)
    assert (t * q0, p * q0, twos) == (t0 * q, p0 * q, twos0)  # the same T/Q and P/Q
    assert q.bit_length() < 0.85 * q0.bit_length()
    assert t.bit_length() < 0.9 * t0.bit_length()


@pytest.mark.parametrize("digits", [1, 100, 5_000, 200_000])
def test_the_tail_ratio_gives_the_exact_series_ratio_to_the_last_unit(digits: int) -> None:
    bits = fixed.precision_bits(digits)
    n = chudnovsky.terms_for(digits + fixed.GUARD_BITS)
    m = n // 2
    left, right = chudnovsky.split(0, m), chudnovsky.split(m, n, need_p=False)
    tail_bits = chudnovsky.tail_precision(m, n, bits)
    assert tail_bits < 0.6 * bits or digits < 1000  # the division at the tail needs about half the bits
    q, t = fixed.head_ratio(left, fixed.tail_ratio(right, tail_bits), bits, tail_bits, None)
    (p1, q1, t1, e1), (_, q2, t2, e2) = left, right
    whole_q, whole_t = (q1 * q2) << (e1 + e2), ((t1 * q2) << e2) + p1 * t2  # the last merge, done exactly
    exact = (whole_q << (bits + 32)) // whole_t
    assert abs(fixed.quotient(q, t, bits) - exact) <= 1


def test_the_last_range_gets_less_work_when_asked() -> None:
    even = chudnovsky.balanced_cuts(700_000, 2)
    lighter = chudnovsky.balanced_cuts(700_000, 2, last_extra=0.12)
    assert even[0] == lighter[0] == 0 and even[-1] == lighter[-1] == 700_000
    assert even[1] < lighter[1] < 0.56 * 700_000
    three = chudnovsky.balanced_cuts(700_000, 3, last_extra=0.12)
    assert three[2] - three[1] > three[3] - three[2]


@pytest.fixture
def scratch_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the worker processes' scratch directory goes (instead of /dev/shm)."""
    monkeypatch.setenv(scratch.ROOT_VARIABLE, str(tmp_path))
    return tmp_path


def test_scratch_files_are_removed_after_a_run(reference: bytes, scratch_root: Path) -> None:
    assert run(60_000, workers=2)[0] == reference[:60_002]
    assert list(scratch_root.iterdir()) == []


def test_scratch_files_are_removed_when_the_run_is_cancelled(scratch_root: Path) -> None:
    def cancel(fraction: float) -> None:
        if fraction > 0.61:  # after the series: the sums have travelled through scratch files
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(400_000, workers=2, progress=cancel)
    assert list(scratch_root.iterdir()) == []


def test_scratch_spaces_of_killed_processes_are_removed(scratch_root: Path) -> None:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    orphan = scratch_root / f"pi-scratch-{ended.pid}-abc"  # its owner was SIGKILLed, say
    orphan.mkdir()
    (orphan / "leftover").write_bytes(b"digits")
    live = scratch_root / f"pi-scratch-{os.getpid()}-def"
    live.mkdir()
    other = scratch_root / "something-else"
    other.mkdir()

    fresh = scratch.Scratch.create()
    try:
        assert not orphan.exists()
        assert live.exists() and other.exists()
        assert Path(fresh.directory).parent == scratch_root
    finally:
        fresh.remove()


def test_stats_fields() -> None:
    _, stats = run(20_000)
    assert stats.workers == 1
    assert stats.seconds >= stats.series + stats.final
    assert min(stats.series, stats.final, stats.convert, stats.write) >= 0
    assert stats.peak_rss_bytes is None or stats.peak_rss_bytes > 0


def test_default_workers_use_one_process_for_small_sizes() -> None:
    assert engine.resolve_workers(100_000, None) == 1
    assert engine.resolve_workers(10**8, None) >= 1
    assert engine.resolve_workers(10, 3) == 3


@pytest.mark.parametrize("bad", [0, -1, 10**8 + 1, 1.5, "10", True])
def test_bad_digits_raise_value_error(bad: object) -> None:
    with pytest.raises(ValueError):
        compute_pi(bad, io.BytesIO())  # type: ignore[arg-type]


def test_bad_workers_raise_value_error() -> None:
    with pytest.raises(ValueError, match="workers"):
        compute_pi(10, io.BytesIO(), workers=0)


def test_memory_refusal_names_digits_estimate_and_limit() -> None:
    out = io.BytesIO()
    need = estimate(10**8).peak_memory_bytes
    with pytest.raises(PiTooLargeError) as info:
        compute_pi(10**8, out, memory_limit_bytes=need - 1)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "100,000,000 digits" in message
    assert f"{need / 2**20:,.0f} MiB" in message
    assert "limit" in message
    assert out.getvalue() == b""


def test_memory_limit_that_fits_is_accepted() -> None:
    data, _ = run(100, memory_limit_bytes=estimate(100).peak_memory_bytes)
    assert data == PI_50 + b"58209749445923078164062862089986280348253421170679"


def test_estimate_grows_with_digits() -> None:
    small, large = estimate(10**4), estimate(10**8)
    assert isinstance(small, Estimate)
    assert 0 < small.seconds < large.seconds
    assert 0 < small.peak_memory_bytes < large.peak_memory_bytes < 4 * 2**30


@pytest.mark.parametrize("bits", [1, 18, 19, 50, 51, 1000, 65_536, 1_000_003])
def test_square_root_is_the_floor_or_one_below(bits: int) -> None:
    exact = gmpy2.isqrt(mpz(10005) << (2 * bits))
    assert exact - fixed.sqrt_10005(bits) in (0, 1)


def test_conversion_refuses_a_value_on_a_digit_boundary() -> None:
    bits = fixed.precision_bits(5)
    exactly_half = convert.Fraction(mpz(1) << (bits - 1), bits, 3, 5)  # 0.5000000... then a digit edge
    with pytest.raises(fixed.AmbiguousDigitsError):
        convert.emit_digits(exactly_half, [].append)


def test_verify_rejects_a_wrong_digit() -> None:
    verify_bytes(PI_50, 50)
    with pytest.raises(VerificationError, match="decimal 50"):
        verify_bytes(PI_50[:-1] + b"1", 50)
    with pytest.raises(VerificationError, match="bytes"):
        verify_bytes(PI_50[:-1], 50)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "pijobs.worker.pi", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_writes_file_and_verifies(tmp_path: Path, reference: bytes) -> None:
    target = tmp_path / "pi.txt"
    result = _cli("1000", "--out", str(target), "--verify", "--progress")
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == reference[:1002]
    assert "verified" in result.stderr
    assert "100.0%" in result.stderr


def test_cli_writes_stdout() -> None:
    result = _cli("50", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.encode() == PI_50


@pytest.mark.parametrize("args", [["0"], ["abc"], ["-5"], ["10", "--workers", "0"], [], ["10", "--verify"]])
def test_cli_rejects_bad_input(args: list[str]) -> None:
    result = _cli(*args)
    assert result.returncode != 0
    assert "error" in result.stderr


def test_engine_does_not_import_flint() -> None:
    code = (
        "import io, sys, pijobs.worker.pi as p; p.compute_pi(10, io.BytesIO()); "
        "assert 'flint' not in sys.modules"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, timeout=60)


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_workers_started_either_way_give_the_same_digits(reference: bytes, start_method: str) -> None:
    data, stats = run(50_000, workers=2, start_method=start_method)
    assert data == reference[:50_002]
    assert stats.workers == 2


def _kill_a_worker(which: int) -> Callable[[float], None]:
    """A progress callback that SIGKILLs one of the pool's processes (as the OOM killer would) the first time
    it is called: the pool has started and its tasks are out, some perhaps not yet taken by a worker."""
    killed: list[int] = []

    def progress(fraction: float) -> None:
        workers = sorted(multiprocessing.active_children(), key=lambda p: p.pid or 0)
        if not killed and workers:
            victim = workers[which % len(workers)]
            os.kill(victim.pid or 0, signal.SIGKILL)
            killed.append(victim.pid or 0)

    return progress


@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", ["spawn", "fork"])
@pytest.mark.parametrize("which", [0, 1], ids=["first-worker", "second-worker"])
def test_a_dead_worker_fails_the_call_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, start_method: str, which: int
) -> None:
    monkeypatch.setenv(scratch.ROOT_VARIABLE, str(tmp_path))
    with pytest.raises(RuntimeError, match="worker process died"):
        run(200_000, workers=2, start_method=start_method, progress=_kill_a_worker(which))
    assert list(tmp_path.iterdir()) == []
    assert multiprocessing.active_children() == []  # the survivor is gone too


def test_cli_reports_a_failed_verification(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pijobs.worker.pi import __main__ as cli

    def wrong(path: str, digits: int) -> None:
        raise VerificationError("first difference at byte 7 (decimal 6)")

    monkeypatch.setattr(cli, "verify_file", wrong)
    assert cli.main(["20", "--out", str(tmp_path / "pi.txt"), "--verify"]) == 1


def test_cli_reports_an_unwritable_file(tmp_path: Path) -> None:
    result = _cli("10", "--out", str(tmp_path / "missing" / "pi.txt"))
    assert result.returncode == 1
    assert "cannot write" in result.stderr
