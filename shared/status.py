"""Job states and the one table of allowed transitions."""

from __future__ import annotations

from enum import Enum

from pijobs.shared.errors import InvalidTransitionError


class JobStatus(str, Enum):
    QUEUED = "QUEUED"
    PROVISIONING = "PROVISIONING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return not TRANSITIONS[self]

    @property
    def is_live(self) -> bool:
        """A live job holds (or is about to hold) a stack and a capacity slot."""
        return self in (JobStatus.PROVISIONING, JobStatus.RUNNING)


TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.PROVISIONING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.PROVISIONING: frozenset(
        {
            JobStatus.RUNNING,
            JobStatus.QUEUED,  # infrastructure failure with attempts left: back in the queue
            JobStatus.FAILED,
            JobStatus.TIMED_OUT,
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.SUCCEEDED,
            JobStatus.QUEUED,  # instance lost with attempts left
            JobStatus.FAILED,
            JobStatus.TIMED_OUT,
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.TIMED_OUT: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

TERMINAL_STATES = frozenset(s for s in JobStatus if s.is_terminal)
# Not finished yet, in the order a job passes through them (waiting, or holding a slot: ``is_live``).
UNFINISHED_STATES = tuple(s for s in JobStatus if not s.is_terminal)


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in TRANSITIONS[current]


def ensure_transition(current: JobStatus, target: JobStatus) -> None:
    """Raise InvalidTransitionError unless ``current -> target`` is in the table."""
    if not can_transition(current, target):
        raise InvalidTransitionError(current.value, target.value)
