"""The job's phase table: legal paths only, timings per phase."""

from __future__ import annotations

import pytest

from asyncovf.engine.job import IllegalTransition, JobState, Phase

HAPPY = [Phase.SPEC, Phase.IMPORT, Phase.LEASE_WAIT, Phase.UPLOAD, Phase.COMPLETE,
         Phase.IMPORTED]


def test_the_happy_path_records_a_timing_per_phase() -> None:
    state = JobState("web-001")
    for phase in HAPPY:
        state.advance(phase)
    assert state.done and state.phase is Phase.IMPORTED
    assert set(state.timings) == {"spec", "import", "lease_wait", "upload", "complete"}
    assert "imported" in repr(state)


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([], Phase.UPLOAD),
        ([Phase.SPEC], Phase.COMPLETE),
        ([Phase.SPEC, Phase.IMPORT, Phase.LEASE_WAIT], Phase.FAILED),  # a lease must be aborted
        ([Phase.SPEC, Phase.FAILED], Phase.SPEC),  # terminal
        (HAPPY, Phase.ABORT),
    ],
)
def test_illegal_transitions_raise(path: list[Phase], bad: Phase) -> None:
    state = JobState("x")
    for phase in path:
        state.advance(phase)
    with pytest.raises(IllegalTransition, match=f"x: .* → {bad.value}"):
        state.advance(bad)


def test_a_failed_upload_goes_through_abort() -> None:
    state = JobState("x")
    for phase in [Phase.SPEC, Phase.IMPORT, Phase.LEASE_WAIT, Phase.UPLOAD, Phase.ABORT,
                  Phase.FAILED]:
        state.advance(phase)
    assert state.done
