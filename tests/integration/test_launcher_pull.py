"""The launcher's pull mode (tests/vcsim/launcher/pull.go), driven with plain vSphere calls
through VCenterSession: an import lease's capabilities, HttpNfcLeasePullFromUrls_Task and
CancelTask on its task.

Each test opens its own import lease (CreateImportSpec + ImportVApp of a package from
tests/factory.py), serves the package's files with tests/httpserver.py, completes or
aborts the lease and removes the VM. vcsim speaks API 6.5 and pull mode is 6.7's, so the
session's client is switched to 6.7 to write the calls.
"""

from __future__ import annotations

import hashlib
import ssl
import tarfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
import trustme
from aiohttp import web
from pyVmomi import vim, vmodl

from asyncovf.errors import TaskError, VCenterError
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.session import VCenterSession
from tests.factory import BuiltPackage, DiskSpec, build_package
from tests.httpserver import serve_app, serve_directory
from tests.integration.inspect import list_vms
from tests.integration.test_batch import check_invariants
from tests.integration.test_launcher_clones import counters, in_thread
from tests.vcsim.harness import Vcsim, running_vcsim

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

T = TypeVar("T")
LONG = 60.0  # pull_delay_seconds for a task that must still run when the test looks at it
BOUND = 30.0  # no task here should take longer to end


@dataclass
class Lease:
    """An import lease of one VM, and the device its disk goes to."""

    lease: Any
    vm_name: str
    target: str  # the disk's importKey
    ended: bool = False


@dataclass
class Place:
    """A session and where the imports go; what it opened is ended at the end."""

    session: VCenterSession
    folder: Any
    pool: Any
    datastore: Any
    leases: list[Lease] = field(default_factory=list)

    async def open_lease(self, built: BuiltPackage, vm_name: str) -> Lease:
        descriptor = await in_thread(lambda: descriptor_of(built))
        result = await self.session.invoke(
            self.session.content.ovfManager, "CreateImportSpec", ovfDescriptor=descriptor,
            resourcePool=self.pool, datastore=self.datastore,
            cisp=vim.OvfManager.CreateImportSpecParams(entityName=vm_name))
        assert not result.error
        lease = await self.session.invoke(self.pool, "ImportVApp", spec=result.importSpec,
                                          folder=self.folder)
        info = (await self.session.retrieve(lease, ["info"]))["info"]
        (disk,) = [device for device in info.deviceUrl if device.disk]
        opened = Lease(lease, vm_name, disk.importKey)
        self.leases.append(opened)
        return opened

    async def end(self, lease: Lease, method: str) -> None:
        """Complete or Abort the lease."""
        lease.ended = True
        await self.session.invoke(lease.lease, method)

    async def pull(self, lease: Lease, *files: vim.HttpNfcLease.SourceFile) -> Any:
        """HttpNfcLeasePullFromUrls_Task; returns the task."""
        return await self.session.invoke(lease.lease, "PullFromUrls", files=list(files))

    async def task_info(self, task: Any) -> Any:
        return (await self.session.retrieve(task, ["info"]))["info"]

    async def wait(self, task: Any) -> Any:
        with anyio.fail_after(BOUND):
            return await self.session.wait_for_task(task)

    async def task_fault(self, task: Any) -> Any:
        """The fault the task ends in (it must end in error)."""
        with pytest.raises(TaskError) as caught:
            await self.wait(task)
        return caught.value.fault


def descriptor_of(built: BuiltPackage) -> str:
    if built.path.is_dir():
        return (built.path / built.descriptor_name).read_text()
    with tarfile.open(built.path) as archive:
        member = archive.extractfile(built.descriptor_name)
        assert member is not None
        return member.read().decode()


@asynccontextmanager
async def place(vcsim: Vcsim, connection: ConnectionSettings, prefix: str
                ) -> AsyncIterator[Place]:
    """A session speaking API 6.7; at the end, every lease it opened is ended (Abort if the
    test did not end it) and every VM named ``prefix``… is removed; then the launcher's
    counters show no open lease, and every session logged out."""
    # An Abort is answered once the launcher deleted the VM, as vCenter's rollback would.
    await in_thread(lambda: vcsim.behave(delete_before_answer=True))
    async with VCenterSession(connection) as session:
        session.client.use_api_version("6.7")
        index = session.content.searchIndex

        async def find(path: str) -> Any:
            return await session.invoke(index, "FindByInventoryPath", inventoryPath=path)

        cluster = await find("DC0/host/DC0_C0")
        where = Place(session=session, folder=await find("DC0/vm"),
                      pool=(await session.retrieve(cluster, ["resourcePool"]))["resourcePool"],
                      datastore=await find("DC0/datastore/LocalDS_0"))
        try:
            yield where
        finally:
            for lease in where.leases:
                if not lease.ended:
                    await where.end(lease, "Abort")
            for vm in await list_vms(connection):
                if vm.name.startswith(prefix):
                    await session.wait_for_task(
                        await session.invoke(vim.VirtualMachine(vm.moid), "Destroy"))
    await in_thread(lambda: check_invariants(vcsim))


def source(lease: Lease, url: str, **fields: Any) -> vim.HttpNfcLease.SourceFile:
    return vim.HttpNfcLease.SourceFile(targetDeviceId=lease.target, url=url,
                                       create=fields.pop("create", True), **fields)


async def plain_package(tmp_path: Path, name: str) -> tuple[BuiltPackage, str, bytes]:
    """An OVF directory ``tmp_path/name/``: the package, its disk's path under tmp_path,
    and the disk's bytes."""
    built = await in_thread(lambda: build_package(tmp_path, name, ova=False,
                                                  disks=(DiskSpec(16, 256 * 1024),)))
    (disk,) = built.disk_names
    return built, f"{name}/{disk}", built.contents[disk]


@asynccontextmanager
async def serve(path: str, handler: Callable[[web.Request], Any]) -> AsyncIterator[str]:
    """An http server of one GET route; yields its URL."""
    app = web.Application()
    app.router.add_get(path, handler)
    async with serve_app(app) as base:
        yield base + path


async def progress_at_least(where: Place, task: Any, percent: int) -> Any:
    """The task's info once its progress reached ``percent`` (polled, bounded)."""
    with anyio.fail_after(BOUND):
        while True:
            info = await where.task_info(task)
            if (info.progress or 0) >= percent or info.state in ("success", "error"):
                return info
            await anyio.sleep(0.05)


# -- capabilities and the switches ------------------------------------------------------


async def test_import_leases_support_pull_mode_unless_switched_off(
        vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path) -> None:
    behaviour = await in_thread(vcsim.behaviour)
    assert behaviour.pull_supported is True and behaviour.pull_delay_seconds == 0
    built, _, _ = await plain_package(tmp_path, "lp-caps")
    async with place(vcsim, connection, "lp-caps") as where:
        first = await where.open_lease(built, "lp-caps-1")
        read = await where.session.retrieve(first.lease, [
            "capabilities", "capabilities.pullModeSupported", "state"])
        capabilities = read["capabilities"]
        assert isinstance(capabilities, vim.HttpNfcLease.Capabilities)
        assert capabilities.pullModeSupported is True and capabilities.corsSupported is False
        assert read["capabilities.pullModeSupported"] is True and read["state"] == "ready"

        await in_thread(lambda: vcsim.behave(pull_supported=False))
        second = await where.open_lease(built, "lp-caps-2")
        for lease in (first, second):
            read = await where.session.retrieve(lease.lease, ["capabilities"])
            assert read["capabilities"].pullModeSupported is False
        with pytest.raises(VCenterError) as caught:
            await where.pull(second, source(second, "http://127.0.0.1:9/x.vmdk"))
        assert caught.value.fault_type == "NotSupported"
    snapshot = await counters(vcsim)
    assert snapshot.pulls_started == 0 and snapshot.faults("HttpNfcLeasePullFromUrls_Task") == 1


async def test_the_flags_set_the_pull_behaviour_a_reset_restores() -> None:
    with running_vcsim(extra_args=["-pull-supported=false", "-pull-delay-seconds=2.5"]) as other:
        behaviour = await in_thread(other.behaviour)
        assert behaviour.pull_supported is False and behaviour.pull_delay_seconds == 2.5
        changed = await in_thread(lambda: other.behave(pull_supported=True,
                                                       pull_delay_seconds=0))
        assert changed.pull_supported is True and changed.pull_delay_seconds == 0
        assert changed.delete_on_abort is True  # the other fields are as they were
        await in_thread(other.reset_counters)
        behaviour = await in_thread(other.behaviour)
        assert behaviour.pull_supported is False and behaviour.pull_delay_seconds == 2.5


# -- pulls that succeed ------------------------------------------------------------------------


async def test_a_pull_of_a_vmdk_url_succeeds_and_the_lease_completes(
        vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path) -> None:
    built, disk, data = await plain_package(tmp_path, "lp-plain")
    async with serve_directory(tmp_path) as served, \
            place(vcsim, connection, "lp-plain") as where:
        lease = await where.open_lease(built, "lp-plain-1")
        task = await where.pull(lease, source(lease, served.url(disk), size=len(data)))
        assert await where.wait(task) is None
        info = await where.task_info(task)
        assert (info.state, info.progress, info.cancelable) == ("success", 100, True)
        assert info.name.info.wsdlName == "HttpNfcLeasePullFromUrls_Task"
        assert info.entityName == "lp-plain-1"
        progress = await where.session.retrieve(lease.lease, ["transferProgress"])
        assert progress["transferProgress"] == 100
        await where.end(lease, "Complete")
        with pytest.raises(VCenterError) as caught:  # the lease has ended
            await where.pull(lease, source(lease, served.url(disk)))
        assert caught.value.fault_type == "InvalidState"
        assert served.gets[disk] == 1
        snapshot = await counters(vcsim)
        assert (snapshot.pulls_started, snapshot.pulls_succeeded, snapshot.pulls_failed,
                snapshot.pulls_running) == (1, 1, 0, 0)
        assert snapshot.pull_bytes == snapshot.nfc_bytes == len(data)
        assert dict(snapshot.nfc_requests) == {"PUT": 1}  # create: PUT, as an upload


async def test_an_ova_members_pull_streams_the_archive_to_that_member(
        vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path) -> None:
    built = await in_thread(lambda: build_package(tmp_path, "lp-ova",
                                                  disks=(DiskSpec(16, 256 * 1024),)))
    (disk,) = built.disk_names
    member = built.contents[disk]
    async with serve_directory(tmp_path) as served, \
            place(vcsim, connection, "lp-ova") as where:
        lease = await where.open_lease(built, "lp-ova-1")
        url = served.url(built.path.name)
        fault = await where.task_fault(await where.pull(
            lease, source(lease, url, memberName="no-such.vmdk")))
        assert isinstance(fault, vim.fault.FileNotFound)
        task = await where.pull(lease, source(lease, url, memberName=disk, create=False))
        await where.wait(task)
        await where.end(lease, "Complete")
        assert served.gets[built.path.name] == 2
    snapshot = await counters(vcsim)
    assert (snapshot.pulls_succeeded, snapshot.pulls_failed) == (1, 1)
    assert snapshot.nfc_bytes == len(member) and dict(snapshot.nfc_requests) == {"POST": 1}
    # What it fetched: the archive up to its end marker (its last record's padding aside)
    # for the missing member, then up to the disk's end.
    size = built.path.stat().st_size
    assert size - tarfile.RECORDSIZE + len(member) <= snapshot.pull_bytes < 2 * size


# -- pulls that fail -----------------------------------------------------------------------


async def test_a_size_mismatch_fails_the_task(
        vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path) -> None:
    built, disk, data = await plain_package(tmp_path, "lp-size")
    async with serve_directory(tmp_path) as served, \
            place(vcsim, connection, "lp-size") as where:
        lease = await where.open_lease(built, "lp-size-1")
        for size in (len(data) + 1, len(data) - 1):
            task = await where.pull(lease, source(lease, served.url(disk), size=size))
            fault = await where.task_fault(task)
            assert isinstance(fault, vim.fault.FileFault), fault
            info = await where.task_info(task)
            assert "size mismatch" in info.error.msg, info.error.msg
    snapshot = await counters(vcsim)
    assert (snapshot.pulls_started, snapshot.pulls_failed, snapshot.pulls_succeeded) == (2, 2, 0)


async def test_a_source_that_fails_fails_the_task(
        vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path) -> None:
    built, disk, data = await plain_package(tmp_path, "lp-cut")
    async with serve_directory(tmp_path, ranges=False) as served, \
            place(vcsim, connection, "lp-cut") as where:
        lease = await where.open_lease(built, "lp-cut-1")
        served.cut[disk] = (10_000, 1)  # the connection drops after 10,000 bytes, once
        fault = await where.task_fault(await where.pull(lease, source(lease, served.url(disk))))
        assert isinstance(fault, vim.fault.HttpFault) and fault.statusCode == 0
        fault = await where.task_fault(await where.pull(
            lease, source(lease, served.url("lp-cut/missing.vmdk"))))
        assert isinstance(fault, vim.fault.HttpFault) and fault.statusCode == 404
        assert served.gets[disk] == 1
    snapshot = await counters(vcsim)
    assert (snapshot.pulls_failed, snapshot.pulls_succeeded) == (2, 0)
    assert 0 < snapshot.pull_bytes < len(data)


async def test_a_wrong_target_device_id_is_an_invalid_argument(
        vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path) -> None:
    built, disk, _ = await plain_package(tmp_path, "lp-target")
    async with place(vcsim, connection, "lp-target") as where:
        lease = await where.open_lease(built, "lp-target-1")
        wrong = vim.HttpNfcLease.SourceFile(targetDeviceId="/lp-target-1/nosuch:0",
                                            url="http://127.0.0.1:9/x.vmdk", create=True)
        with pytest.raises(VCenterError) as caught:
            await where.pull(lease, wrong)
        assert caught.value.fault_type == "InvalidArgument"
        with pytest.raises(VCenterError) as caught:  # the same device twice
            await where.pull(lease, *[source(lease, "http://127.0.0.1:9/x.vmdk")] * 2)
        assert caught.value.fault_type == "InvalidArgument"
    snapshot = await counters(vcsim)
    assert snapshot.pulls_started == 0


async def test_lease_rules_apply_to_a_pull_as_to_an_upload(
        vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path) -> None:
    built, disk, data = await plain_package(tmp_path, "lp-rules")
    await in_thread(lambda: vcsim.set_faults(lease={"initializing_reads": 2,
                                                    "error_after_bytes": 1000}))
    async with serve_directory(tmp_path) as served, \
            place(vcsim, connection, "lp-rules") as where:
        lease = await where.open_lease(built, "lp-rules-1")  # its first read
        with pytest.raises(VCenterError) as caught:  # not seen ready yet
            await where.pull(lease, source(lease, served.url(disk)))
        assert caught.value.fault_type == "InvalidState"
        states = [(await where.session.retrieve(lease.lease, ["state"]))["state"]
                  for _ in range(2)]
        assert states == ["initializing", "ready"]
        task = await where.pull(lease, source(lease, served.url(disk), size=len(data)))
        fault = await where.task_fault(task)  # the lease went to error mid-write
        assert isinstance(fault, vim.fault.FileFault | vim.fault.InvalidState), fault
        assert (await where.session.retrieve(lease.lease, ["state"]))["state"] == "error"
    snapshot = await counters(vcsim)
    assert snapshot.leases_in_error == 1 and snapshot.pulls_failed == 1
    assert 1000 <= snapshot.nfc_bytes < len(data)


# -- https and headers ---------------------------------------------------------------------------


@pytest.fixture
def tls_certificate() -> tuple[ssl.SSLContext, str]:
    """A server context for 127.0.0.1 and its certificate's thumbprint (AA:BB:…)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    sha1 = hashlib.sha1(der).hexdigest().upper()  # noqa: S324 - vSphere's thumbprint format
    return context, ":".join(sha1[i:i + 2] for i in range(0, len(sha1), 2))


async def test_an_https_source_needs_its_thumbprint(
        vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path,
        tls_certificate: tuple[ssl.SSLContext, str]) -> None:
    context, thumbprint = tls_certificate
    built, disk, data = await plain_package(tmp_path, "lp-tls")
    async with serve_directory(tmp_path, ssl_context=context) as served, \
            place(vcsim, connection, "lp-tls") as where:
        lease = await where.open_lease(built, "lp-tls-1")
        url = served.url(disk)
        assert url.startswith("https://")
        for given in (None, "AB:" * 19 + "AB"):
            fault = await where.task_fault(await where.pull(
                lease, source(lease, url, sslThumbprint=given)))
            assert isinstance(fault, vim.fault.SSLVerifyFault), fault
            assert fault.thumbprint == thumbprint  # the server's, to check and pin
        assert served.gets[disk] == 0
        await where.wait(await where.pull(lease, source(lease, url, sslThumbprint=thumbprint,
                                                        size=len(data))))
        await where.end(lease, "Complete")
        assert served.gets[disk] == 1
    snapshot = await counters(vcsim)
    assert (snapshot.pulls_failed, snapshot.pulls_succeeded) == (2, 1)
    assert snapshot.pull_bytes == snapshot.nfc_bytes == len(data)


async def test_http_headers_go_with_the_get(
        vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path) -> None:
    built, _, data = await plain_package(tmp_path, "lp-auth")
    seen: list[str | None] = []

    async def guarded(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Bearer secret":
            raise web.HTTPUnauthorized()
        return web.Response(body=data)

    async with serve("/disk.vmdk", guarded) as url, \
            place(vcsim, connection, "lp-auth") as where:
        lease = await where.open_lease(built, "lp-auth-1")
        fault = await where.task_fault(await where.pull(lease, source(lease, url)))
        assert isinstance(fault, vim.fault.HttpFault) and fault.statusCode == 401
        header = vim.KeyValue(key="Authorization", value="Bearer secret")
        await where.wait(await where.pull(lease, source(lease, url, httpHeaders=[header])))
        await where.end(lease, "Complete")
    assert seen == [None, "Bearer secret"]


# -- progress, and pulls stopped mid-transfer ------------------------------------------------


def half_then_gate(data: bytes, gate: anyio.Event) -> Callable[[web.Request], Any]:
    """A handler that sends the first half of ``data``, then the rest once ``gate`` is set."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await response.prepare(request)
        await response.write(data[:len(data) // 2])
        await gate.wait()
        await response.write(data[len(data) // 2:])
        await response.write_eof()
        return response

    return handler


async def test_progress_advances_as_the_bytes_arrive(
        vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path) -> None:
    built, _, data = await plain_package(tmp_path, "lp-progress")
    gate = anyio.Event()
    async with serve("/disk.vmdk", half_then_gate(data, gate)) as url, \
            place(vcsim, connection, "lp-progress") as where:
        lease = await where.open_lease(built, "lp-progress-1")
        task = await where.pull(lease, source(lease, url, size=len(data)))
        info = await progress_at_least(where, task, 45)
        assert info.state == "running" and 45 <= info.progress <= 50, info.progress
        read = await where.session.retrieve(lease.lease, ["transferProgress"])
        assert read["transferProgress"] == info.progress
        assert (await counters(vcsim)).pulls_running == 1
        gate.set()
        await where.wait(task)
        assert (await where.task_info(task)).progress == 100
        await where.end(lease, "Complete")
    snapshot = await counters(vcsim)
    assert snapshot.pulls_succeeded == 1 and snapshot.nfc_bytes == len(data)


@pytest.mark.parametrize("how", ["Cancel", "Abort"])
async def test_a_fetch_under_way_stops_when_its_task_is_cancelled_or_its_lease_aborted(
        vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path, how: str) -> None:
    built, _, data = await plain_package(tmp_path, f"lp-stop-{how.lower()}")
    gate = anyio.Event()  # not set while the pull runs: the rest never comes
    async with serve("/disk.vmdk", half_then_gate(data, gate)) as url:
        try:
            async with place(vcsim, connection, f"lp-stop-{how.lower()}") as where:
                lease = await where.open_lease(built, f"lp-stop-{how.lower()}-1")
                task = await where.pull(lease, source(lease, url, size=len(data)))
                await progress_at_least(where, task, 45)
                if how == "Cancel":
                    await where.session.invoke(task, "Cancel")
                else:
                    await where.end(lease, "Abort")
                fault = await where.task_fault(task)
                expected = (vmodl.fault.RequestCanceled if how == "Cancel"
                            else vim.fault.InvalidState)
                assert isinstance(fault, expected), fault
                assert (await counters(vcsim)).pulls_running == 0
        finally:
            gate.set()  # the handler ends (its connection is gone) before the server closes
    snapshot = await counters(vcsim)
    assert (snapshot.pulls_failed, snapshot.pulls_cancelled) == (1, int(how == "Cancel"))
    assert 0 < snapshot.nfc_bytes < len(data)


# -- cancelled and aborted pulls ---------------------------------------------------------------


async def test_cancel_task_ends_a_running_pull_in_request_canceled(
        vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path) -> None:
    await in_thread(lambda: vcsim.behave(pull_delay_seconds=LONG))
    built, disk, _ = await plain_package(tmp_path, "lp-cancel")
    async with serve_directory(tmp_path) as served, \
            place(vcsim, connection, "lp-cancel") as where:
        lease = await where.open_lease(built, "lp-cancel-1")
        task = await where.pull(lease, source(lease, served.url(disk)))
        info = await where.task_info(task)
        assert info.state == "running" and info.cancelable
        assert (await counters(vcsim)).pulls_running == 1
        with pytest.raises(VCenterError) as caught:  # one pull at a time
            await where.pull(lease, source(lease, served.url(disk)))
        assert caught.value.fault_type == "InvalidState"

        await where.session.invoke(task, "Cancel")
        info = await where.task_info(task)
        assert info.state == "error" and info.cancelled
        assert isinstance(info.error, vmodl.fault.RequestCanceled)
        with pytest.raises(VCenterError) as caught:  # it has ended
            await where.session.invoke(task, "Cancel")
        assert caught.value.fault_type == "InvalidState"
        assert served.gets[disk] == 0
    snapshot = await counters(vcsim)
    assert (snapshot.pulls_started, snapshot.pulls_running, snapshot.pulls_cancelled,
            snapshot.pulls_failed) == (1, 0, 1, 1)
    assert snapshot.calls("CancelTask") == 2 and snapshot.faults("CancelTask") == 1
    assert snapshot.pull_bytes == snapshot.nfc_bytes == 0


async def test_aborting_the_lease_ends_its_running_pull(
        vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path) -> None:
    await in_thread(lambda: vcsim.behave(pull_delay_seconds=LONG))
    built, disk, _ = await plain_package(tmp_path, "lp-abort")
    async with serve_directory(tmp_path) as served, \
            place(vcsim, connection, "lp-abort") as where:
        lease = await where.open_lease(built, "lp-abort-1")
        task = await where.pull(lease, source(lease, served.url(disk)))
        await where.end(lease, "Abort")
        fault = await where.task_fault(task)
        assert isinstance(fault, vim.fault.InvalidState), fault
        assert not (await where.task_info(task)).cancelled
        assert served.gets[disk] == 0
    snapshot = await counters(vcsim)
    assert (snapshot.pulls_running, snapshot.pulls_failed, snapshot.pulls_cancelled) == (0, 1, 0)
