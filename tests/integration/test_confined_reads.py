"""A directory package whose href leads out through a symlinked directory, imported
from the command line: refused before vCenter is asked to create anything."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.faults.support import FaultRun, import_cli
from tests.unit.test_confined_reads import SECRET, outside, write_ovf_directory

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_import_of_an_href_through_a_symlinked_directory_is_refused_and_creates_nothing(
    fault_run: FaultRun, tmp_path: Path
) -> None:
    package = write_ovf_directory(tmp_path, "sub/secret.txt", manifest=False)
    (package / "sub").symlink_to(outside(tmp_path), target_is_directory=True)
    run = replace(fault_run, package_path=package)
    before = await run.counters()
    status, stdout, stderr = await import_cli(run, "--name", f"{run.prefix}-vm")
    assert status == 2, stderr
    assert stderr.strip() == (f"asyncovf: error: {package}: sub/secret.txt: sub is a symbolic "
                              "link; a package's files must be inside its directory")
    assert SECRET.decode().splitlines()[0] not in stdout + stderr
    counters = await run.counters()
    assert counters.ok("ImportVApp") == before.ok("ImportVApp")
    await run.check_invariants(imported=set())
