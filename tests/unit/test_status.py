"""The transition table: every allowed and every forbidden move."""

from __future__ import annotations

import itertools

import pytest

from pijobs.shared.errors import InvalidTransitionError
from pijobs.shared.status import TERMINAL_STATES, TRANSITIONS, JobStatus, can_transition, ensure_transition

S = JobStatus
ALLOWED = {
    (S.QUEUED, S.PROVISIONING),
    (S.QUEUED, S.CANCELLED),
    (S.QUEUED, S.FAILED),
    (S.PROVISIONING, S.RUNNING),
    (S.PROVISIONING, S.QUEUED),
    (S.PROVISIONING, S.FAILED),
    (S.PROVISIONING, S.TIMED_OUT),
    (S.PROVISIONING, S.CANCELLED),
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.QUEUED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.TIMED_OUT),
    (S.RUNNING, S.CANCELLED),
}


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_allowed_transition_passes(current: JobStatus, target: JobStatus) -> None:
    assert can_transition(current, target)
    ensure_transition(current, target)


FORBIDDEN = sorted(set(itertools.product(JobStatus, JobStatus)) - ALLOWED)


@pytest.mark.parametrize(("current", "target"), FORBIDDEN)
def test_forbidden_transition_raises(current: JobStatus, target: JobStatus) -> None:
    assert not can_transition(current, target)
    with pytest.raises(InvalidTransitionError) as info:
        ensure_transition(current, target)
    assert current.value in info.value.message and target.value in info.value.message


def test_terminal_states_are_exactly_the_finished_ones() -> None:
    assert {S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLED} == TERMINAL_STATES
    assert all(not TRANSITIONS[state] for state in TERMINAL_STATES)


def test_status_is_a_string_for_storage() -> None:
    assert S.RUNNING == "RUNNING"
    assert JobStatus("QUEUED") is S.QUEUED
