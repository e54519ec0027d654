"""``asyncovf run --dry-run`` checks every VM as its import would, and creates nothing.

A value out of range in one VM's properties (YAML or a CSV row), one row's
network mapping, a name already taken in the folder: each is an error naming
its VM, where the import would fail, even when the VM shares its group with
VMs that pass. vCenter's verdict (CreateImportSpec) is asked once per group,
FindChild once per VM that passed its own checks; one session, logged out; no
ImportVApp, no lease.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.factory import APPLIANCE_PRODUCT_SECTION, DiskSpec, build_package
from tests.faults.support import FaultRun, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

DEFAULTS = ("defaults:\n  source: ./appliance.ova\n  cluster: DC0_C0\n"
            "  datastore: LocalDS_0\n")
PORT = "appliance.port.web"
HOSTNAME = "appliance.hostname.web"
OUT_OF_RANGE = "out of range for uint16 (0..65535)"


def make_appliance(directory: Path) -> None:
    """An OVA with vApp properties: a string hostname and a uint16 port."""
    build_package(directory, "appliance", disks=(DiskSpec(16, 64 * 1024),),
                  product_section=APPLIANCE_PRODUCT_SECTION)


async def write_batch(directory: Path, text: str, csv: str | None = None) -> Path:
    await anyio.to_thread.run_sync(make_appliance, directory)
    if csv is not None:
        await anyio.Path(directory / "rows.csv").write_text(csv)
    batch = directory / "fleet.yaml"
    await anyio.Path(batch).write_text(text)
    return batch


async def check_nothing_created(run: FaultRun, *, imported: set[str] | None = None) -> None:
    """One session, logged out; no ImportVApp, no lease, no folder."""
    counters = await run.settled()
    assert counters.ok("Login") == 1 == counters.ok("Logout")
    assert counters.calls("ImportVApp") == 0 and counters.leases_created == 0
    assert counters.calls("CreateFolder") == 0
    await run.check_invariants(imported=imported if imported is not None else set())


async def test_a_property_value_out_of_range_fails_its_vm_though_its_group_passes(
    fault_run: FaultRun, tmp_path: Path
) -> None:
    prefix = fault_run.prefix
    batch = await write_batch(tmp_path, DEFAULTS + "vms:\n"
                              f'  - name: "{prefix}-{{index:02d}}"\n    count: 10\n'
                              f'    properties: {{{PORT}: "80{{index:02d}}", '
                              f'{HOSTNAME}: "{{name}}.example"}}\n'
                              f"  - name: {prefix}-bad\n"
                              f'    properties: {{{PORT}: "70000", {HOSTNAME}: bad.example}}\n')
    status, stdout, stderr = await run_cli(fault_run, batch, "--dry-run")
    assert status == 2, stderr
    lines = stdout.splitlines()
    # Same options but the values: one group, and its one bad VM named.
    assert lines[0].startswith(f"ERROR {prefix}-01 … {prefix}-bad (11 VMs): ")
    assert lines[1] == f"      error: {prefix}-bad: property '{PORT}' = '70000': {OUT_OF_RANGE}"
    assert lines[-1] == "dry run: 11 VMs in 1 group; 1 would fail; nothing was created"
    counters = await fault_run.counters()
    assert counters.calls("CreateImportSpec") == 1  # once for the group, not once per VM
    assert counters.calls("FindChild") == 10  # every VM that passed its own checks
    await check_nothing_created(fault_run)


async def test_a_csv_row_s_value_or_network_mapping_fails_that_row_s_vm(
    fault_run: FaultRun, tmp_path: Path
) -> None:
    prefix = fault_run.prefix
    rows = (f"name,properties.{PORT},network.VM Network\n"
            f"{prefix}-1,8081,\n"
            f"{prefix}-2,99999,\n"
            f"{prefix}-3,8083,NoSuchNet\n"
            f"{prefix}-4,8084,DC0_DVPG0\n"
            f"{prefix}-5,8085,\n")
    batch = await write_batch(tmp_path, DEFAULTS + "vms_csv: rows.csv\n", csv=rows)
    status, stdout, stderr = await run_cli(fault_run, batch, "--dry-run")
    assert status == 2, stderr
    assert f"      error: {prefix}-2: property '{PORT}' = '99999': {OUT_OF_RANGE}\n" in stdout
    # Its own network mapping makes row 3 a group of its own: the header names it.
    header = next(line for line in stdout.splitlines() if f" {prefix}-3:" in line)
    assert header.startswith(f"ERROR {prefix}-3: ")
    assert "      error: network for 'VM Network' 'NoSuchNet' not found; choices: " in stdout
    assert next(line for line in stdout.splitlines()
                if f" {prefix}-4:" in line).startswith(f"ok    {prefix}-4: ")
    assert stdout.splitlines()[-1] == ("dry run: 5 VMs in 3 groups; 2 would fail; nothing was "
                                       "created")
    counters = await fault_run.counters()
    # Rows 1, 2 and 5 (no mapping), and row 4; row 3 failed before vCenter was asked.
    assert counters.calls("CreateImportSpec") == 2
    assert counters.calls("FindChild") == 3  # rows 1, 4 and 5: the others failed their own
    await check_nothing_created(fault_run)


async def test_a_name_taken_in_the_folder_is_that_vm_s_error_or_warning(
    fault_run: FaultRun, tmp_path: Path
) -> None:
    prefix = fault_run.prefix
    taken = await write_batch(tmp_path, DEFAULTS + f"vms:\n  - name: {prefix}-2\n")
    status, _, stderr = await run_cli(fault_run, taken)
    assert status == 0, stderr
    batch = tmp_path / "more.yaml"
    await anyio.Path(batch).write_text(DEFAULTS + "vms:\n"
                                       f'  - name: "{prefix}-{{index}}"\n    count: 3\n')
    await anyio.to_thread.run_sync(fault_run.vcsim.reset_counters)

    status, stdout, stderr = await run_cli(fault_run, batch, "--dry-run")
    assert status == 2, stderr
    assert stdout.splitlines()[0].startswith(f"ERROR {prefix}-1 … {prefix}-3 (3 VMs): ")
    error = stdout.splitlines()[1]
    assert error.startswith(f"      error: {prefix}-2: a VM of this name is in /DC0/vm (vm-")
    assert error.endswith("): the import would fail (--on-conflict fail)")

    status, stdout, stderr = await run_cli(fault_run, batch, "--dry-run", "--on-conflict", "skip")
    assert status == 0, stderr
    assert stdout.splitlines()[0].startswith(f"ok    {prefix}-1 … {prefix}-3 (3 VMs): ")
    assert stdout.splitlines()[1].startswith(f"      warning: {prefix}-2: a VM of this name is")
    counters = await fault_run.settled()
    assert counters.ok("Login") == 2 == counters.ok("Logout")  # one session per dry run
    assert counters.calls("ImportVApp") == 0 and counters.leases_created == 0
    await fault_run.check_invariants(imported={f"{prefix}-2"})


async def test_a_dry_run_of_broken_sources_alone_never_logs_in(
    fault_run: FaultRun, tmp_path: Path
) -> None:
    prefix = fault_run.prefix
    batch = await write_batch(tmp_path, DEFAULTS + "vms:\n"
                              f'  - name: "{prefix}-{{index}}"\n    count: 4\n'
                              "    source: ./nope.ova\n")
    status, stdout, stderr = await run_cli(fault_run, batch, "--dry-run")
    assert status == 2, stderr
    assert stdout.splitlines()[:2] == [
        f"ERROR {prefix}-1 … {prefix}-4 (4 VMs): {tmp_path}/nope.ova -> -",
        f"      error: {tmp_path}/nope.ova: no such file or directory",
    ]
    counters = await fault_run.counters()
    assert counters.total_calls() == 0  # nothing to ask vCenter: not even a Login
    await fault_run.check_invariants(imported=set())
