"""Output a hostile package or a closed pipe cannot turn into noise.

A reader that stops early (``asyncovf spec X | head``) ends the command quietly
with exit 141, as a Unix tool killed by SIGPIPE; a descriptor with thousands of
networks left unmapped says so in one line per job, once however often the job
is retried; a warning said many times is printed once with its count.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pyVmomi import vim

from asyncovf.cli import main
from asyncovf.cli.exits import EXIT_BROKEN_PIPE
from asyncovf.cli.output import unless_unread
from asyncovf.engine import batch
from asyncovf.engine.batch import JobContext, JobResult, JobStatus, run_job
from asyncovf.engine.options import RunSettings
from asyncovf.engine.plan import JobSpec
from asyncovf.engine.resolve import map_networks
from asyncovf.errors import TransportError
from asyncovf.ovf.descriptor import Descriptor, parse_descriptor
from asyncovf.printable import counted
from asyncovf.vsphere.inventory import (
    InventorySnapshot,
    Placement,
    PlacementRequest,
    snapshot_from_contents,
)
from tests.factory import APPLIANCE_PRODUCT_SECTION, build_package, ovf_descriptor
from tests.unit.test_inventory import content

ROOT = Path(__file__).resolve().parents[2]


# A broken pipe.

def many_properties(count: int) -> str:
    """A product section whose options document is far bigger than a pipe's buffer."""
    first, rest = APPLIANCE_PRODUCT_SECTION.split("      <Property", 1)
    value = "v" * 200
    return first + "".join(
        f'      <Property ovf:key="p{i:05d}" ovf:type="string" ovf:userConfigurable="true" '
        f'ovf:value="{value}"/>\n' for i in range(count)) + "      <Property" + rest


def run_into_closed_pipe(command: list[str], read: int, *, buffered: bool) -> tuple[int, str]:
    """Run ``asyncovf COMMAND`` with stdout a pipe whose reader closes it after ``read``
    bytes; its exit status and stderr.

    ``buffered``: stdout as a pipe usually is, so that what fits in its buffer is
    written only when the command ends, not as it prints (``PYTHONUNBUFFERED``).
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen([sys.executable, "-m", "asyncovf", *command], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    got = process.stdout.read(read) if read else b""
    process.stdout.close()
    try:
        stderr = process.stderr.read().decode()
        status = process.wait(timeout=60)
    finally:
        process.kill()
        process.stderr.close()
    assert len(got) == read
    return status, stderr


BUFFERED = pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])


@BUFFERED
@pytest.mark.parametrize(("properties", "read"), [(3000, 0), (3000, 16), (0, 0)],
                         ids=["big-closed-at-once", "big-closed-after-16-bytes",
                              "small-closed-at-once"])
def test_spec_into_a_reader_that_closes_early_exits_quietly_with_141(
    tmp_path: Path, properties: int, read: int, buffered: bool
) -> None:
    package = build_package(tmp_path, "wide", product_section=many_properties(properties)
                            if properties else "")
    status, stderr = run_into_closed_pipe(["spec", str(package.path)], read,
                                          buffered=buffered)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert stderr == ""
    assert status == EXIT_BROKEN_PIPE == 141


@BUFFERED
def test_report_json_into_a_closed_pipe_exits_quietly_with_141(
    tmp_path: Path, buffered: bool
) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({
        "version": 1, "run": {"seconds": 1, "concurrency": 1}, "totals": {},
        "jobs": [{"name": "a", "status": "imported", "bytes": 0, "error_kind": None,
                  "start": 0, "end": 1,
                  "phases": [{"attempt": 1, "phase": "spec", "start": 0, "end": 1}]}]}))
    status, stderr = run_into_closed_pipe(["report", str(path), "--json", "-"], 0,
                                          buffered=buffered)
    # Not "asyncovf: error: BrokenPipeError" and exit 2: a closed pipe is no bad input.
    assert (status, stderr) == (EXIT_BROKEN_PIPE, "")


def test_main_ends_a_command_whose_print_meets_a_broken_pipe_with_141(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from asyncovf.cli import cleanup

    async def printing(args: Any) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cleanup, "command", printing)
    assert main(["cleanup", "--name-prefix", "x"]) == EXIT_BROKEN_PIPE
    assert capsys.readouterr().err == ""


def test_a_progress_printer_whose_reader_went_away_stops_instead_of_raising() -> None:
    printed: list[int] = []

    def progress(value: int) -> None:
        if value == 2:
            raise BrokenPipeError(32, "Broken pipe")
        printed.append(value)

    guarded = unless_unread(progress)
    for value in (1, 2, 3):
        guarded(value)
    assert printed == [1]  # nothing after the pipe broke: no one reads it


# Repeated warnings.

def test_identical_lines_are_said_once_with_their_count_in_first_said_order() -> None:
    lines = ["b"] * 12 + ["a", "b", "c", "a"]
    assert counted(lines) == ["b (×13)", "a (×2)", "c"]
    assert counted([]) == []


def wide_descriptor(networks: list[str]) -> Descriptor:
    """A descriptor (the factory's) whose NetworkSection lists ``networks``."""
    text = ovf_descriptor("web-01", [("web-01-disk1.vmdk", 1024, 16)], network="N")
    one = '    <Network ovf:name="N">\n      <Description>The N network</Description>\n' \
          "    </Network>\n"
    assert one in text
    many = "".join(f'    <Network ovf:name="{name}"/>\n' for name in networks)
    return parse_descriptor(text.replace(one, many).encode(), name="web-01.ovf")


def networked() -> tuple[InventorySnapshot, Placement]:
    """One datacenter with a "VM Network" (the default) and another network."""
    root, dc = vim.Folder("group-d1"), vim.Datacenter("datacenter-2")
    vm_folder, host_folder = vim.Folder("folder-3"), vim.Folder("folder-4")
    ds_folder, net_folder = vim.Folder("folder-5"), vim.Folder("folder-6")
    cluster, pool = vim.ClusterComputeResource("domain-c7"), vim.ResourcePool("resgroup-8")
    host, ds = vim.HostSystem("host-10"), vim.Datastore("datastore-13")
    snapshot = snapshot_from_contents([
        content(root, name="Datacenters", childType=["Folder", "Datacenter"]),
        content(dc, name="DC0", parent=root, vmFolder=vm_folder, hostFolder=host_folder),
        content(vm_folder, name="vm", parent=dc, childType=["Folder", "VirtualMachine"]),
        content(host_folder, name="host", parent=dc, childType=["Folder", "ComputeResource"]),
        content(ds_folder, name="datastore", parent=dc, childType=["Folder", "Datastore"]),
        content(net_folder, name="network", parent=dc, childType=["Folder", "Network"]),
        content(cluster, name="C0", parent=host_folder, resourcePool=pool, host=[host]),
        content(pool, name="Resources", parent=cluster, owner=cluster),
        content(host, name="esx1", parent=cluster),
        content(ds, name="LocalDS_0", parent=ds_folder, summary__freeSpace=10,
                summary__accessible=True),
        content(vim.Network("network-14"), name="VM Network", parent=net_folder),
        content(vim.Network("network-15"), name="Storage", parent=net_folder),
    ], root_moid="group-d1")
    return snapshot, snapshot.resolve(PlacementRequest())


NETWORKS = [f"net-{i:05d}" for i in range(10_000)]
MANY_UNMAPPED = ("10000 networks are not mapped ('net-00000', 'net-00001', 'net-00002', … "
                 "and 9997 more); using 'VM Network'")


def network_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "not mapped" in r.getMessage()]


@pytest.mark.parametrize(("networks", "note"), [
    (NETWORKS, MANY_UNMAPPED),
    (["a", "VM Network", "b"], "2 networks are not mapped ('a', 'b'); using 'VM Network'"),
    (["a"], "network 'a' is not mapped; using 'VM Network'"),
], ids=["ten-thousand", "two-and-the-default", "one"])
def test_networks_left_unmapped_are_one_warning_with_their_count(
    caplog: pytest.LogCaptureFixture, networks: list[str], note: str
) -> None:
    snapshot, placement = networked()
    descriptor = wide_descriptor(networks)
    warnings: list[str] = []
    with caplog.at_level(logging.WARNING):
        mapped = map_networks("web-01", {}, snapshot, placement, descriptor, warnings)
        again = map_networks("web-01", {}, snapshot, placement, descriptor, warnings)
    assert network_lines(caplog) == [f"web-01: {note}"]
    assert warnings == [note]
    default = snapshot.find("network", "VM Network").ref
    # Every one falls back to the default, but the one of its name (vCenter maps that).
    assert mapped == again == {n: default for n in networks if n != "VM Network"}


class Inventory:
    """The job's inventory cache, holding one snapshot."""

    def __init__(self, snapshot: InventorySnapshot) -> None:
        self.snapshot = snapshot

    async def get(self, session: Any) -> InventorySnapshot:
        return self.snapshot

    async def host_addresses(self, session: Any) -> Any:
        return self.snapshot.host_addresses()


@pytest.mark.anyio
async def test_a_retried_job_warns_of_its_unmapped_networks_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    snapshot, placement = networked()
    failures = [TransportError("connection reset", host="vc")]
    imports = []

    async def resolve(*args: Any) -> tuple[InventorySnapshot, Placement]:
        return snapshot, placement

    async def import_vm(*args: Any, networks: dict[str, Any], **kwargs: Any) -> bool:
        imports.append(networks)
        if failures:
            raise failures.pop()
        return True

    monkeypatch.setattr(batch, "_resolve", resolve)
    monkeypatch.setattr(batch, "import_vm", import_vm)
    spec = JobSpec(index=0, name="web-01", source="web-01.ova", placement=PlacementRequest(),
                   origin="batch.yaml:1")
    result = JobResult(spec=spec)
    context = JobContext(inventory=Inventory(snapshot),  # type: ignore[arg-type]
                         settings=RunSettings(job_retries=2))
    package: Any = SimpleNamespace(descriptor=wide_descriptor(NETWORKS))
    with caplog.at_level(logging.WARNING):
        await run_job(object(), result, package, context)  # type: ignore[arg-type]
    assert (result.status, result.attempts, len(imports)) == (JobStatus.IMPORTED, 2, 2)
    assert result.warnings == [MANY_UNMAPPED]
    assert network_lines(caplog) == [f"web-01: {MANY_UNMAPPED}"]
    assert len(imports[1]) == len(NETWORKS)


@pytest.mark.anyio
async def test_a_packages_repeated_warning_is_logged_once_with_its_count(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    from types import SimpleNamespace

    from asyncovf.engine import run as run_module

    package = SimpleNamespace(warnings=["odd section"] * 5000 + ["other"])

    async def fake_open(source: str, **kwargs: object) -> object:
        return package

    monkeypatch.setattr(run_module, "open_package", fake_open)
    monkeypatch.setattr(run_module, "check_files", lambda *args, **kwargs: None)
    plan = SimpleNamespace(jobs=[SimpleNamespace(source="/a.ova")])
    with caplog.at_level("WARNING"):
        packages, errors = await run_module.open_sources(plan)  # type: ignore[arg-type]
    assert errors == {} and packages == {"/a.ova": package}
    assert [r.getMessage() for r in caplog.records] == ["/a.ova: odd section (×5000)",
                                                       "/a.ova: other"]
