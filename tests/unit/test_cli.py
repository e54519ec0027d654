"""The command line: light to import, and the flags ``import`` and ``run`` share mean one thing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from asyncovf.cli.groups import run_settings
from asyncovf.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[2]

SHARED_FLAGS = ("--parallel-disks", "3", "--lease-timeout", "7.5", "--keep-failed",
                "--no-verify-manifest", "--create-folders", "--on-conflict", "replace",
                "--job-retries", "2", "--report", "report.json")


def test_importing_the_command_line_loads_neither_pyvmomi_nor_aiohttp_nor_lxml_nor_rich() -> None:
    # main() catches SIGTERM before the tool loads: the import itself must stay light.
    code = ("import json, sys\n"
            "import asyncovf.cli\n"
            "heavy = ('pyVmomi', 'aiohttp', 'lxml', 'rich')\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_import_and_run_turn_the_flags_they_share_into_the_same_settings() -> None:
    parser = build_parser()
    one = parser.parse_args(["import", "appliance.ova", *SHARED_FLAGS])
    batch = parser.parse_args(["run", "batch.yaml", *SHARED_FLAGS])
    assert run_settings(one, concurrency=1) == run_settings(batch, concurrency=1)
    assert one.report == batch.report == "report.json"


@pytest.mark.parametrize(("command", "job_retries"), [("import", 0), ("run", 1)])
def test_one_import_is_retried_only_when_asked_and_a_batch_job_once(command: str,
                                                                    job_retries: int) -> None:
    args = build_parser().parse_args([command, "source"])
    assert run_settings(args, concurrency=1).job_retries == job_retries
