"""One import, end to end, against vcsim: the walking skeleton's promises.

Every test checks the outcome *and* the invariants: sessions opened = closed,
every ImportVApp ended by Complete or Abort, no half-imported VM left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from asyncovf.engine.phases import JobState, Phase
from asyncovf.errors import ManifestError
from asyncovf.importer import Importer
from asyncovf.ovf.package import check_files
from asyncovf.ovf.source import open_package
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.inventory import PlacementRequest
from tests.factory import DEPLOYMENT_OPTION_SECTION, DiskSpec, build_package
from tests.integration.inspect import vms_named
from tests.vcsim.harness import Vcsim

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[2]


def assert_nothing_leaked(vcsim: Vcsim) -> None:
    counters = vcsim.counters()
    assert counters.ok("Login") == counters.ok("Logout"), "a session was not logged out"
    assert counters.ok("ImportVApp") == (
        counters.calls("HttpNfcLeaseComplete") + counters.calls("HttpNfcLeaseAbort")
    ), "a lease was neither completed nor aborted"


def run_cli(vcsim: Vcsim, *args: str, password: str | None = None,
            ca_file: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSPHERE_")}
    env.update(VSPHERE_SERVER=vcsim.url, VSPHERE_USER=vcsim.username,
               VSPHERE_PASSWORD=password if password is not None else vcsim.password)
    extra = ["--ca-file", str(vcsim.ca_file)] if ca_file else []
    return subprocess.run(
        [sys.executable, "-m", "asyncovf", "import", *args, *extra],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("ova", [True, False], ids=["ova", "ovf-directory"])
async def test_import_creates_the_vm_the_descriptor_describes(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path, ova: bool
) -> None:
    built = build_package(tmp_path, "appliance", disks=(DiskSpec(32, 300_000), DiskSpec(8, 1000)),
                          cpus=2, memory_mb=256, ova=ova)
    name = f"skeleton-{'ova' if ova else 'ovf'}"
    package = await open_package(built.path)
    check_files(package)
    async with Importer(connection) as importer:
        placement = await importer.resolve(PlacementRequest(cluster="DC0_C0"))
        state = await importer.import_package(package, name, placement)

    assert state.phase is Phase.IMPORTED and state.vm
    assert state.bytes_done == state.bytes_total == sum(
        package.member(n).size for n in built.disk_names)
    assert set(state.timings) >= {"spec", "import", "lease_wait", "upload", "complete"}
    (vm,) = await vms_named(connection, name)
    assert (vm.moid, vm.cpus, vm.memory_mb, vm.disks) == (state.vm, 2, 256, 2)
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert counters.ok("HttpNfcLeaseComplete") == 1 and counters.calls("HttpNfcLeaseAbort") == 0
    assert counters.nfc_bytes == state.bytes_done
    await anyio.to_thread.run_sync(assert_nothing_leaked, vcsim)


async def test_cancelling_mid_upload_aborts_the_lease_and_removes_the_vm(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    built = build_package(tmp_path, "big", disks=(DiskSpec(64, 4 * 2**20),))
    package = await open_package(built.path)
    state = JobState(name="cancelled-mid-upload")
    # vCenter keeps an aborted import's VM here: its removal is the tool's to prove.
    await anyio.to_thread.run_sync(lambda: vcsim.behave(delete_on_abort=False))

    with anyio.CancelScope() as scope:
        def cancel_once_bytes_flow(job: JobState) -> None:
            if job.phase is Phase.UPLOAD and job.bytes_done > 0:
                scope.cancel()

        async with Importer(connection) as importer:
            placement = await importer.resolve(PlacementRequest(cluster="DC0_C0"))
            await importer.import_package(package, state.name, placement, state=state,
                                          on_progress=cancel_once_bytes_flow)
    assert scope.cancelled_caught
    assert state.phase is Phase.ABORTED and 0 < state.bytes_done < state.bytes_total
    assert await vms_named(connection, state.name) == []
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert counters.ok("HttpNfcLeaseAbort") == 1 and counters.calls("HttpNfcLeaseComplete") == 0
    assert counters.ok("Destroy_Task") == 1
    await anyio.to_thread.run_sync(assert_nothing_leaked, vcsim)


async def test_digest_mismatch_aborts_and_leaves_nothing(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    built = build_package(tmp_path, "tampered", corrupt_digest=True)
    package = await open_package(built.path)
    state = JobState(name="tampered-vm")
    async with Importer(connection) as importer:
        placement = await importer.resolve(PlacementRequest(cluster="DC0_C0"))
        with pytest.raises(ManifestError, match="sha256 digest mismatch for tampered-disk1.vmdk"):
            await importer.import_package(package, state.name, placement, state=state)
    assert state.phase is Phase.FAILED and state.cleanup_errors == []
    assert await vms_named(connection, state.name) == []
    await anyio.to_thread.run_sync(assert_nothing_leaked, vcsim)


def test_cli_imports_and_prints_the_vm(vcsim: Vcsim, tmp_path: Path) -> None:
    built = build_package(tmp_path, "cli")
    result = run_cli(vcsim, str(built.path), "--name", "cli-vm", "--cluster", "DC0_C0",
                     "--datastore", "LocalDS_0", "--folder", "/DC0/vm")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("imported cli-vm as vm-")
    assert_nothing_leaked(vcsim)


def test_cli_refuses_a_disk_shorter_than_its_ovf_size_before_touching_vcenter(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    built = build_package(tmp_path, "short", declared_size_delta=512)
    result = run_cli(vcsim, str(built.path), "--name", "short-vm", "--cluster", "DC0_C0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "short-disk1.vmdk is" in lines[0] and "shorter than its ovf:size=" in lines[0]
    counters = vcsim.counters()
    assert counters.calls("ImportVApp") == 0 and counters.calls("Login") == 0
    assert anyio.run(vms_named, connection, "short-vm") == []
    assert_nothing_leaked(vcsim)


def test_cli_refuses_a_deployment_the_descriptor_lacks_before_logging_in(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    built = build_package(tmp_path, "sized", envelope_sections=DEPLOYMENT_OPTION_SECTION)
    result = run_cli(vcsim, str(built.path), "--name", "sized-vm", "--cluster", "DC0_C0",
                     "--deployment", "huge")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
        "sized-vm: deployment option 'huge' not in the descriptor; choices: small, large")
    counters = vcsim.counters()
    assert counters.calls("Login") == counters.calls("CreateImportSpec") == 0
    assert counters.calls("ImportVApp") == 0
    assert anyio.run(vms_named, connection, "sized-vm") == []
    assert_nothing_leaked(vcsim)


def test_cli_digest_mismatch_exits_1_after_aborting(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    # Sizes all match: only the digest computed while streaming can notice.
    built = build_package(tmp_path, "bad", ova=False, corrupt_digest=True)
    result = run_cli(vcsim, str(built.path), "--name", "bad-vm", "--cluster", "DC0_C0")
    assert result.returncode == 1, result.stderr
    assert "digest mismatch for bad-disk1.vmdk" in result.stderr
    counters = vcsim.counters()
    assert counters.ok("HttpNfcLeaseAbort") == 1
    assert anyio.run(vms_named, connection, "bad-vm") == []
    assert_nothing_leaked(vcsim)


def test_cli_without_a_trusted_ca_explains_how_to_fix_it(vcsim: Vcsim, tmp_path: Path) -> None:
    built = build_package(tmp_path, "tls")
    result = run_cli(vcsim, str(built.path), "--name", "tls-vm", "--cluster", "DC0_C0",
                     ca_file=False)
    assert result.returncode == 2
    assert f"TLS certificate of {vcsim.host} could not be verified" in result.stderr
    assert "--ca-file" in result.stderr and "--insecure" in result.stderr
    assert vcsim.counters().calls("Login") == 0


def test_cli_wrong_password_is_a_clear_error_that_never_shows_the_password(
    vcsim: Vcsim, tmp_path: Path
) -> None:
    built = build_package(tmp_path, "pw")
    secret = "Hunter2-not-the-password"
    result = run_cli(vcsim, str(built.path), "--name", "pw-vm", "--cluster", "DC0_C0",
                     password=secret)
    assert result.returncode == 2
    assert "InvalidLogin" in result.stderr
    assert secret not in result.stderr + result.stdout
    counters = vcsim.counters()
    assert counters.faults("Login") == 1 and counters.ok("Logout") == 0


def test_cli_unknown_datastore_names_the_choices(vcsim: Vcsim, tmp_path: Path) -> None:
    built = build_package(tmp_path, "ds")
    result = run_cli(vcsim, str(built.path), "--name", "ds-vm", "--cluster", "DC0_C0",
                     "--datastore", "NoSuchDS")
    assert result.returncode == 2
    assert result.stderr.strip() == ("asyncovf: error: datastore 'NoSuchDS' not found; "
                                     "choices: /DC0/datastore/LocalDS_0")
    assert vcsim.counters().calls("ImportVApp") == 0
    assert_nothing_leaked(vcsim)
