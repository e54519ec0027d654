"""Text from a batch file or a CSV cannot forge output or reach vCenter as a VM name."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.support import FaultRun, import_cli, run_cli

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.anyio]


async def test_a_csv_name_with_control_characters_is_refused_and_shown_escaped(
    fault_run: FaultRun, tmp_path: Path,
) -> None:
    rows = tmp_path / "rows.csv"
    # A quoted cell may hold a newline: the name would forge a line of the summary.
    rows.write_text("name,source,cluster\n"
                    f'"{fault_run.prefix}\nweb-01: imported vm-1",{fault_run.package_path},'
                    "DC0_C0\n")
    status, stdout, stderr = await run_cli(fault_run, rows)
    assert status == 2
    assert stderr == (f"asyncovf: error: {rows}:3: row 3.name: "
                      f"'{fault_run.prefix}\\nweb-01: imported vm-1' holds control "
                      "characters; a VM name must be printable\n"), stderr
    assert stdout == ""
    counters = await fault_run.counters()
    assert counters.total_calls() == 0  # never sent, never retried
    await fault_run.check_invariants(imported=set())


async def test_an_escape_sequence_in_a_name_never_reaches_the_terminal(
    fault_run: FaultRun,
) -> None:
    status, stdout, stderr = await import_cli(fault_run, "--name",
                                              f"{fault_run.prefix}\x1b]0;pwned\x07")
    assert status == 2
    assert "\x1b" not in stderr + stdout and "\x07" not in stderr + stdout
    assert stderr.startswith("asyncovf: error: --name: ") and "\\x1b]0;pwned\\x07" in stderr
    assert stderr.count("\n") == 1
    assert (await fault_run.counters()).calls("ImportVApp") == 0
    await fault_run.check_invariants(imported=set())
