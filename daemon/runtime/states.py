"""Job states and the transitions between them, as a table. Pure standard library."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    # RUNNING -> QUEUED: interrupted (crash, SIGTERM) and put back.
    JobState.RUNNING: frozenset(
        {JobState.DONE, JobState.FAILED, JobState.QUEUED, JobState.CANCELLED}
    ),
    JobState.DONE: frozenset({JobState.QUEUED}),  # re-queue on request (redo a delivery)
    JobState.FAILED: frozenset({JobState.QUEUED}),  # retry
    JobState.CANCELLED: frozenset({JobState.QUEUED}),  # retry
}

ACTIVE = frozenset({JobState.QUEUED, JobState.RUNNING})
FINISHED = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


class TransitionError(Exception):
    """A transition the table does not allow, or one whose expected state no longer holds."""


def check_transition(old: JobState, new: JobState) -> None:
    if new not in ALLOWED.get(old, frozenset()):
        allowed = ", ".join(sorted(ALLOWED.get(old, frozenset()))) or "nothing"
        raise TransitionError(
            f"a {old} job cannot become {new}; from {old} it can become {allowed}"
        )
