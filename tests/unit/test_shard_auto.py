"""``asyncovf run --shard auto``: the shard of a pod of a Kubernetes Indexed Job.

Kubernetes gives each pod its index, 0-based, in ``JOB_COMPLETION_INDEX``; the
number of shards (the Job's ``completions``) is ours to pass, in
``ASYNCOVF_SHARD_COUNT``. Anything missing or wrong is a usage error on one
line naming the variable, before anything reaches vCenter.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from asyncovf.cli import main
from asyncovf.cli.exits import EXIT_OK, EXIT_USAGE
from asyncovf.cli.parser import build_parser
from asyncovf.cli.run import COMPLETION_INDEX, SHARD_COUNT, shard_option
from asyncovf.engine.plan import load_batch
from asyncovf.errors import InputError


def pod(index: str | None, count: str | None) -> dict[str, str]:
    """A pod's environment: the variables given, nothing else."""
    env = {"HOME": "/home/asyncovf"}
    if index is not None:
        env[COMPLETION_INDEX] = index
    if count is not None:
        env[SHARD_COUNT] = count
    return env


def test_the_variables_are_the_ones_kubernetes_and_the_readme_name() -> None:
    assert COMPLETION_INDEX == "JOB_COMPLETION_INDEX"
    assert SHARD_COUNT == "ASYNCOVF_SHARD_COUNT"


@pytest.mark.parametrize(("index", "count", "shard"), [
    ("0", "3", (1, 3)),
    ("1", "3", (2, 3)),
    ("2", "3", (3, 3)),
    ("0", "1", (1, 1)),
    ("41", "100", (42, 100)),
    (" 1\n", "3 ", (2, 3)),  # as a shell or a manifest may leave them
])
def test_auto_is_the_pods_index_plus_one_of_the_shard_count(
        index: str, count: str, shard: tuple[int, int]) -> None:
    assert shard_option("auto", pod(index, count)) == shard


def test_k_of_n_is_still_read_as_written_and_the_environment_ignored() -> None:
    assert shard_option("2/4", pod("0", "3")) == (2, 4)
    assert shard_option("1/1", {}) == (1, 1)
    with pytest.raises(InputError, match="--shard 5/4"):
        shard_option("5/4", pod("0", "3"))


def test_auto_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(COMPLETION_INDEX, "4")
    monkeypatch.setenv(SHARD_COUNT, "5")
    assert shard_option("auto") == (5, 5)


@pytest.mark.parametrize(("env", "message"), [
    (pod(None, "3"), "--shard auto: JOB_COMPLETION_INDEX is not set (Kubernetes sets it in "
                     "each pod of an Indexed Job; elsewhere give --shard K/N)"),
    (pod("", "3"), "--shard auto: JOB_COMPLETION_INDEX is not set"),
    (pod("0", None), "--shard auto: ASYNCOVF_SHARD_COUNT is not set (set it to the Job's "
                     "completions)"),
    (pod("0", "  "), "--shard auto: ASYNCOVF_SHARD_COUNT is not set"),
    (pod(None, None), "--shard auto: JOB_COMPLETION_INDEX is not set"),
    (pod("one", "3"), "--shard auto: JOB_COMPLETION_INDEX='one' is not a whole number"),
    (pod("-1", "3"), "--shard auto: JOB_COMPLETION_INDEX='-1' is not a whole number"),
    (pod("+1", "3"), "--shard auto: JOB_COMPLETION_INDEX='+1' is not a whole number"),
    (pod("1.0", "3"), "--shard auto: JOB_COMPLETION_INDEX='1.0' is not a whole number"),
    (pod("1_0", "30"), "--shard auto: JOB_COMPLETION_INDEX='1_0' is not a whole number"),
    (pod("\u0663", "30"), "--shard auto: JOB_COMPLETION_INDEX='\u0663' is not a whole number"),
    (pod("0", "3/3"), "--shard auto: ASYNCOVF_SHARD_COUNT='3/3' is not a whole number"),
    (pod("0", "1" * 10), f"--shard auto: ASYNCOVF_SHARD_COUNT='{'1' * 10}' is too large"),
    (pod("0", "0"), "--shard auto: ASYNCOVF_SHARD_COUNT=0: there must be at least 1 shard"),
    (pod("3", "3"), "--shard auto: JOB_COMPLETION_INDEX=3 is out of range for "
                    "ASYNCOVF_SHARD_COUNT=3 (0 to 2); set ASYNCOVF_SHARD_COUNT to the "
                    "Job's completions"),
    (pod("7", "2"), "--shard auto: JOB_COMPLETION_INDEX=7 is out of range for "
                    "ASYNCOVF_SHARD_COUNT=2 (0 to 1)"),
])
def test_a_missing_or_wrong_variable_is_one_line_naming_it(env: dict[str, str],
                                                           message: str) -> None:
    with pytest.raises(InputError) as caught:
        shard_option("auto", env)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_a_hostile_value_is_shown_escaped_and_cut_short() -> None:
    with pytest.raises(InputError) as caught:
        shard_option("auto", pod("1\x1b[2J" + "x" * 200, "3"))
    text = str(caught.value)
    assert "\x1b" not in text and "\n" not in text and len(text) < 120
    assert text.startswith("--shard auto: JOB_COMPLETION_INDEX='1\\x1b[2J")


def test_the_help_says_what_auto_reads() -> None:
    parser = build_parser()
    assert parser.parse_args(["run", "fleet.yaml", "--shard", "auto"]).shard == "auto"
    (commands,) = [action for action in parser._actions
                   if isinstance(action, argparse._SubParsersAction)]
    run = commands.choices["run"]
    (shard,) = [action for action in run._actions if "--shard" in action.option_strings]
    assert shard.metavar == "K/N|auto"
    assert shard.help is not None
    assert COMPLETION_INDEX in shard.help and SHARD_COUNT in shard.help


# -- through the command ----------------------------------------------------------------------

def write_batch(directory: Path, count: int) -> Path:
    batch = directory / "fleet.yaml"
    batch.write_text("defaults:\n  source: ./photon.ova\n  cluster: DC0_C0\n"
                     f'  datastore: LocalDS_0\nvms:\n  - name: "web-{{index}}"\n'
                     f"    count: {count}\n")
    return batch


#: Enough for the command to get past its connection settings without a prompt;
#: nothing below reaches a vCenter.
CONNECTION = ("--server", "vcenter.invalid", "--user", "user", "--password", "secret")


@pytest.mark.parametrize(("index", "count", "error"), [
    (None, "3", "asyncovf: error: --shard auto: JOB_COMPLETION_INDEX is not set"),
    ("0", None, "asyncovf: error: --shard auto: ASYNCOVF_SHARD_COUNT is not set"),
    ("zero", "3", "asyncovf: error: --shard auto: JOB_COMPLETION_INDEX='zero' is not a "
                  "whole number"),
    ("3", "3", "asyncovf: error: --shard auto: JOB_COMPLETION_INDEX=3 is out of range"),
])
def test_run_exits_with_the_usage_status_and_one_error_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        index: str | None, count: str | None, error: str) -> None:
    for name, value in ((COMPLETION_INDEX, index), (SHARD_COUNT, count)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    status = main(["run", str(write_batch(tmp_path, 2)), "--shard", "auto", *CONNECTION])
    stderr = capsys.readouterr().err
    assert status == EXIT_USAGE
    assert stderr.splitlines() == [stderr.strip()] and stderr.startswith(error)


def test_run_takes_the_shard_auto_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    # Two VMs in three shards: the pod of index 2 runs shard 3/3, which has none, and
    # says so before it connects to anything.
    batch = write_batch(tmp_path, 2)
    monkeypatch.setenv(COMPLETION_INDEX, "2")
    monkeypatch.setenv(SHARD_COUNT, "3")
    status = main(["run", str(batch), "--shard", "auto", *CONNECTION])
    assert status == EXIT_OK
    assert capsys.readouterr().err == f"asyncovf: shard 3/3 of {batch} has no jobs\n"


def test_the_pods_of_one_job_split_the_batch_as_k_of_n_does(tmp_path: Path) -> None:
    plan = load_batch(write_batch(tmp_path, 10))
    names = []
    for index in range(4):
        number, total = shard_option("auto", pod(str(index), "4"))
        assert plan.shard(number, total) == plan.shard(index + 1, 4)
        names += [job.name for job in plan.shard(number, total).jobs]
    assert sorted(names) == sorted(job.name for job in plan.jobs)


def test_a_pod_that_cannot_tell_its_shard_says_so_before_reading_the_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(COMPLETION_INDEX, "0")
    monkeypatch.delenv(SHARD_COUNT, raising=False)
    status = main(["run", str(tmp_path / "missing.yaml"), "--shard", "auto", *CONNECTION])
    assert status == EXIT_USAGE
    assert capsys.readouterr().err == (
        "asyncovf: error: --shard auto: ASYNCOVF_SHARD_COUNT is not set (set it to the "
        "Job's completions)\n")
