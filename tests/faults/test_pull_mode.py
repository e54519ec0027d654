"""Pull mode: the simulator's host fetches the disks from the package's web server.

The package is served by the project's test web server (tests/httpserver.py),
which counts GETs by client: the tool's (aiohttp) and the host's (the
launcher's Go client, tests/vcsim/launcher/pull.go). The oracle is the
simulator's counters: pull tasks started, succeeded, failed and cancelled,
leases ended, sessions closed, and no VM the report does not call imported.
"""

from __future__ import annotations

import json
import ssl
import sys
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

from asyncovf.engine.pull import PULL_DIGESTS
from tests.factory import BuiltPackage, DiskSpec, build_package
from tests.faults.support import (
    ROOT,
    FaultRun,
    cli_environment,
    run_cli,
    run_cli_report,
    signal_run,
)
from tests.httpserver import ServedDirectory, serve_directory
from tests.integration.inspect import list_vms

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.anyio]

DISK_BYTES = 300_000


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[ServedDirectory]:
    root = tmp_path / "www"
    await anyio.to_thread.run_sync(lambda: root.mkdir())
    async with serve_directory(root) as directory:
        yield directory


async def publish(served: ServedDirectory, *, ova: bool) -> tuple[str, BuiltPackage, int]:
    """A package on the web server: (its URL, what was built, its disk file's size)."""
    built = await anyio.to_thread.run_sync(lambda: build_package(
        served.root, "pulled", ova=ova, disks=(DiskSpec(16, DISK_BYTES),)))
    name = built.path.name if ova else f"{built.path.name}/{built.descriptor_name}"
    return served.url(name), built, await anyio.to_thread.run_sync(disk_size, built)


def disk_size(built: BuiltPackage) -> int:
    """The stored size of the package's disk: what vCenter receives for it."""
    if built.path.is_dir():
        return (built.path / built.disk_names[0]).stat().st_size
    with tarfile.open(built.path) as archive:
        return archive.getmember(built.disk_names[0]).size


async def pull_batch(run: FaultRun, directory: Path, source: str, count: int,
                     extra: str = "") -> Path:
    batch = directory / "fleet.yaml"
    await anyio.Path(batch).write_text(
        f"defaults:\n  source: {source}\n  cluster: DC0_C0\n  datastore: LocalDS_0\n"
        f"  pull: true\n{extra}vms:\n  - name: \"{run.prefix}-{{index}}\"\n"
        f"    count: {count}\n")
    return batch


async def names_in_inventory(run: FaultRun) -> set[str]:
    return {vm.name for vm in await list_vms(run.connection) if vm.name.startswith(run.prefix)}


async def test_the_hosts_pull_an_ovf_directory_and_the_client_reads_no_disk(
    fault_run: FaultRun, served: ServedDirectory, tmp_path: Path,
) -> None:
    await fault_run.behave(api_version="6.7")
    url, built, size = await publish(served, ova=False)
    batch = await pull_batch(fault_run, tmp_path, url, 3)
    status, _, stderr, report = await run_cli_report(fault_run, batch, "--concurrency", "3")
    assert status == 0, stderr
    assert [(job["status"], job["pulled"], job["digests"]) for job in report["jobs"]] == \
        [("imported", True, PULL_DIGESTS)] * 3
    assert f"asyncovf: warning: 3 jobs pulled by the hosts; digests: {PULL_DIGESTS}" in stderr
    counters = await fault_run.settled()
    assert (counters.pulls_started, counters.pulls_succeeded) == (3, 3)
    assert counters.pull_bytes == counters.nfc_bytes == 3 * size
    # The tool read the descriptor and the manifest; each host read the disk.
    disk = f"{built.path.name}/{built.disk_names[0]}"
    mine = {name for (client, name) in served.gets_by if client == "asyncovf"}
    assert mine == {f"{built.path.name}/{built.descriptor_name}",
                    f"{built.path.name}/pulled.mf"}, served.gets_by
    assert served.gets_by["Go-http-client", disk] == 3
    await fault_run.check_invariants(imported={job["name"] for job in report["jobs"]})


async def test_import_pulls_a_disk_inside_an_ova(
    fault_run: FaultRun, served: ServedDirectory,
) -> None:
    await fault_run.behave(api_version="6.7")
    url, built, size = await publish(served, ova=True)
    name = f"{fault_run.prefix}-0"
    result = await anyio.run_process(
        [sys.executable, "-m", "asyncovf", "import", url, "--pull", "--name", name,
         "--ca-file", str(fault_run.vcsim.ca_file), "--cluster", "DC0_C0",
         "--datastore", "LocalDS_0"],
        env=cli_environment(fault_run), cwd=ROOT, check=False)
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, stderr
    assert stdout.startswith(f"imported {name} as vm-")
    assert stdout.rstrip().endswith(f"; digests: {PULL_DIGESTS})"), stdout
    counters = await fault_run.settled()
    assert (counters.pulls_succeeded, counters.nfc_bytes) == (1, size)
    assert served.gets_by["Go-http-client", built.path.name] == 1
    await fault_run.check_invariants(imported={name})


async def test_an_https_source_is_pulled_trusting_the_certificate_the_client_verified(
    fault_run: FaultRun, tmp_path: Path,
) -> None:
    # The host is given the SHA-1 thumbprint of the certificate the client checked
    # against --source-ca-file; the launcher refuses a pull without the right one.
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "source-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    root = tmp_path / "www"
    await anyio.to_thread.run_sync(lambda: root.mkdir())
    await fault_run.behave(api_version="6.7")
    async with serve_directory(root, ssl_context=context) as served:
        url, built, size = await publish(served, ova=True)
        name = f"{fault_run.prefix}-0"
        result = await anyio.run_process(
            [sys.executable, "-m", "asyncovf", "import", url, "--pull", "--name", name,
             "--source-ca-file", str(ca_file), "--ca-file", str(fault_run.vcsim.ca_file),
             "--cluster", "DC0_C0", "--datastore", "LocalDS_0"],
            env=cli_environment(fault_run), cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr.decode()
    counters = await fault_run.settled()
    assert (counters.pulls_succeeded, counters.nfc_bytes) == (1, size)
    assert served.gets_by["Go-http-client", built.path.name] == 1
    await fault_run.check_invariants(imported={name})


async def test_a_server_that_fails_mid_transfer_fails_the_job_and_leaves_nothing(
    fault_run: FaultRun, served: ServedDirectory, tmp_path: Path,
) -> None:
    await fault_run.behave(api_version="6.7")
    await fault_run.keep_aborted_vms()  # the VM's removal is the tool's to prove
    url, built, size = await publish(served, ova=False)
    served.cut[f"{built.path.name}/{built.disk_names[0]}"] = (size // 2, 1)
    batch = await pull_batch(fault_run, tmp_path, url, 1)
    path = tmp_path / "report.json"
    status, _, stderr = await run_cli(fault_run, batch, "--job-retries", "0", "--report",
                                      str(path))
    assert status == 1, stderr
    report = json.loads(await anyio.Path(path).read_text())
    (job,) = report["jobs"]
    assert job["status"] == "failed" and job["cleanup_errors"] == []
    assert job["error"].startswith("the host's pull failed: "), job["error"]
    assert "\n" not in job["error"]
    counters = await fault_run.settled()
    assert (counters.pulls_failed, counters.ok("HttpNfcLeaseAbort")) == (1, 1)
    assert counters.calls("CancelTask") == 0  # the task had ended: nothing to cancel
    assert await names_in_inventory(fault_run) == set()
    await fault_run.check_invariants(imported=set())


async def test_a_job_retry_pulls_again_after_a_cut_connection(
    fault_run: FaultRun, served: ServedDirectory, tmp_path: Path,
) -> None:
    await fault_run.behave(api_version="6.7")
    url, built, size = await publish(served, ova=False)
    served.cut[f"{built.path.name}/{built.disk_names[0]}"] = (size // 2, 1)
    batch = await pull_batch(fault_run, tmp_path, url, 1)
    status, _, stderr, report = await run_cli_report(fault_run, batch, "--job-retries", "1")
    assert status == 0, stderr
    (job,) = report["jobs"]
    assert (job["status"], job["attempts"], job["pulled"]) == ("imported", 2, True)
    counters = await fault_run.settled()
    assert (counters.pulls_failed, counters.pulls_succeeded) == (1, 1)
    await fault_run.check_invariants(imported={job["name"]})


async def test_sigint_while_the_hosts_pull_cancels_each_task_and_aborts_each_lease(
    fault_run: FaultRun, served: ServedDirectory, tmp_path: Path,
) -> None:
    await fault_run.behave(api_version="6.7", pull_delay_seconds=120)
    await fault_run.keep_aborted_vms()
    url, _, size = await publish(served, ova=False)
    batch = await pull_batch(fault_run, tmp_path, url, 2)
    status, stderr = await signal_run(fault_run, batch, tmp_path / "r.json",
                                      lambda counters: counters.pulls_running == 2)
    assert status == 130, stderr
    assert "Traceback" not in stderr
    counters = await fault_run.settled()
    assert (counters.calls("CancelTask"), counters.pulls_cancelled) == (2, 2)
    assert counters.pulls_running == 0 and counters.ok("HttpNfcLeaseAbort") == 2
    assert await names_in_inventory(fault_run) == set()
    await fault_run.check_invariants(imported=set())


@pytest.mark.parametrize(("behaviour", "why"), [
    ({"api_version": "6.7", "pull_supported": False},
     "the lease's host does not support pull mode"),
    ({}, "vCenter speaks API 6.5; pull mode needs 6.7"),
], ids=["host-without-pull", "api-6.5"])
async def test_without_pull_mode_the_disks_are_uploaded_with_one_warning(
    fault_run: FaultRun, served: ServedDirectory, tmp_path: Path,
    behaviour: dict[str, Any], why: str,
) -> None:
    await fault_run.behave(**behaviour)
    url, _, size = await publish(served, ova=True)
    batch = await pull_batch(fault_run, tmp_path, url, 2)
    status, _, stderr = await run_cli(fault_run, batch)
    assert status == 0, stderr
    warnings = [line for line in stderr.splitlines() if "pull mode" in line]
    assert warnings == [f"asyncovf: warning: pull mode not used, the disks were uploaded: "
                        f"{why} (2 jobs)"], stderr
    counters = await fault_run.settled()
    assert counters.pulls_started == 0 and counters.nfc_bytes == 2 * size
    await fault_run.check_invariants(imported={f"{fault_run.prefix}-1", f"{fault_run.prefix}-2"})
