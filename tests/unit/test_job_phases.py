"""The job's phase table: legal paths only, timings per phase."""

from __future__ import annotations

import pytest

from asyncovf.engine.phases import JobState, Phase
from asyncovf.errors import IllegalTransition

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


ALL_STEPS = [Phase.EXTRA_CONFIG, Phase.INJECT_OVF_ENV, Phase.UPGRADE_HARDWARE, Phase.POWER_ON,
             Phase.WAIT_FOR_IP]


def completed(name: str = "x") -> JobState:
    state = JobState(name)
    for phase in HAPPY[:-1]:
        state.advance(phase)
    return state


def test_every_post_import_step_is_a_phase_with_its_timing() -> None:
    state = completed()
    for phase in [*ALL_STEPS, Phase.IMPORTED]:
        state.advance(phase)
    assert set(state.timings) >= {"extra_config", "inject_ovf_env", "upgrade_hardware",
                                  "power_on", "wait_for_ip"}
    assert [phase for phase, _ in state.history][5:] == [
        "extra_config", "inject_ovf_env", "upgrade_hardware", "power_on", "wait_for_ip",
        "imported"]


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([Phase.MARK_AS_TEMPLATE], Phase.POWER_ON),  # a template is never powered on
        ([], Phase.WAIT_FOR_IP),  # only a powered-on VM gets an address
        ([Phase.UPGRADE_HARDWARE], Phase.WAIT_FOR_IP),
        ([Phase.POWER_ON], Phase.EXTRA_CONFIG),  # steps run in order
        ([Phase.UPGRADE_HARDWARE], Phase.INJECT_OVF_ENV),
        ([Phase.POWER_ON], Phase.FAILED),  # a failed step removes the VM first (ABORT)
    ],
)
def test_post_import_steps_run_in_order_only(path: list[Phase], bad: Phase) -> None:
    state = completed()
    for phase in path:
        state.advance(phase)
    with pytest.raises(IllegalTransition):
        state.advance(bad)


def test_a_failed_step_goes_through_abort() -> None:
    state = completed()
    for phase in (Phase.POWER_ON, Phase.WAIT_FOR_IP, Phase.ABORT, Phase.FAILED):
        state.advance(phase)
    assert state.done and "wait_for_ip" in state.timings
