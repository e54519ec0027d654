"""A batch file's problems are told all at once, one line each (file:line: field),
up to a limit, then counted; an unknown key names the nearest valid one; exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from asyncovf.engine.batch_errors import MAX_REPORTED, BatchErrors
from asyncovf.engine.plan import load_batch
from asyncovf.errors import BatchError

ROOT = Path(__file__).resolve().parents[2]


def batch(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(BatchError) as raised:
        load_batch(path)
    error = raised.value
    return error.lines() if isinstance(error, BatchErrors) else [str(error)]


def test_every_problem_of_the_file_is_told_at_once_each_with_its_line_and_field(
    tmp_path: Path
) -> None:
    path = batch(tmp_path, "defaults:\n  source: a.ova\n  clutser: C0\nvms:\n"
                           "  - name: a\n    count: 0\n"
                           "  - name: b\n    datastor: D0\n"
                           "  - name: a\n")
    assert problems(path) == [
        f"{path}:3: defaults.clutser: unknown key; did you mean 'cluster'?",
        f"{path}:6: vms[0].count: must be a positive integer",
        f"{path}:8: vms[1].datastor: unknown key; did you mean 'datastore'?",
    ]


def test_a_repeated_name_and_a_bad_value_in_different_entries_are_both_told(
    tmp_path: Path
) -> None:
    path = batch(tmp_path, "defaults:\n  source: a.ova\nvms:\n  - name: a\n"
                           "  - name: a\n  - name: b\n    power_on: perhaps\n")
    lines = problems(path)
    assert len(lines) == 2
    assert lines[0] == f"{path}:5: vms[1].name: VM name 'a' repeats the one from {path}:4"
    assert lines[1].startswith(f"{path}:7: vms[2].power_on: ")


def test_an_unknown_key_with_no_near_one_lists_the_keys_expected(tmp_path: Path) -> None:
    path = batch(tmp_path, "defaults:\n  source: a.ova\nvms:\n  - name: a\n    colour: red\n")
    (line,) = problems(path)
    assert line.startswith(f"{path}:5: vms[0].colour: unknown key; expected one of: annotation, ")


def test_a_misspelt_top_level_key_names_the_right_one(tmp_path: Path) -> None:
    path = batch(tmp_path, "default:\n  source: a.ova\nvms:\n  - name: a\n    source: a.ova\n")
    assert problems(path) == [f"{path}:1: default: unknown key; did you mean 'defaults'?"]


def test_past_the_limit_problems_are_counted_not_listed(tmp_path: Path) -> None:
    extra = 7
    entries = "".join(f"  - name: vm-{n}\n    cuont: 2\n"
                      for n in range(MAX_REPORTED + extra))
    path = batch(tmp_path, "defaults:\n  source: a.ova\nvms:\n" + entries)
    lines = problems(path)
    assert len(lines) == MAX_REPORTED + 1
    assert lines[0] == f"{path}:5: vms[0].cuont: unknown key; did you mean 'count'?"
    assert lines[-1] == f"… and {extra} more problems in the batch file"


def test_a_problem_that_stops_the_reading_comes_after_those_found_before_it(
    tmp_path: Path
) -> None:
    path = batch(tmp_path, "defaults:\n  source: a.ova\n  clutser: C0\nvms: not-a-list\n")
    assert problems(path) == [
        f"{path}:3: defaults.clutser: unknown key; did you mean 'cluster'?",
        f"{path}:4: vms: must be a list of VM entries",
    ]


def test_the_command_line_prints_each_problem_on_its_own_line_and_exits_2(
    tmp_path: Path
) -> None:
    path = batch(tmp_path, "connection:\n  insecure: maybe\ndefaults:\n  source: a.ova\n"
                           "vms:\n  - name: a\n    nmae: b\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VSPHERE_", "GOVC_", "VMWARE_"))}
    done = subprocess.run([sys.executable, "-m", "asyncovf", "run", str(path)],
                          capture_output=True, text=True, cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr == (
        f"asyncovf: error: {path}:2: connection.insecure: must be true or false\n"
        f"asyncovf: error: {path}:7: vms[0].nmae: unknown key; did you mean 'name'?\n")
    assert done.stdout == ""
