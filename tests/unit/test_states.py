"""The job state machine table."""

from __future__ import annotations

import itertools

import pytest

from daemon.runtime.states import ALLOWED, JobState, TransitionError, check_transition

EXPECTED = {
    ("queued", "running"),
    ("queued", "cancelled"),
    ("queued", "failed"),
    ("running", "done"),
    ("running", "failed"),
    ("running", "queued"),
    ("running", "cancelled"),
    ("done", "queued"),
    ("failed", "queued"),
    ("cancelled", "queued"),
}


@pytest.mark.parametrize(("old", "new"), list(itertools.product(JobState, JobState)))
def test_transition_table(old: JobState, new: JobState) -> None:
    if (str(old), str(new)) in EXPECTED:
        check_transition(old, new)
    else:
        with pytest.raises(TransitionError, match=f"a {old} job cannot become {new}"):
            check_transition(old, new)


def test_every_state_has_a_row_and_values_are_strings() -> None:
    assert set(ALLOWED) == set(JobState)
    assert JobState.DONE == "done"
