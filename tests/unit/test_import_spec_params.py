"""The exact CreateImportSpec parameters sent for a job's options (vcsim ignores some)."""

from __future__ import annotations

from typing import Any

import pytest
from pyVmomi import vim

from asyncovf.engine.import_specs import create_import_spec
from asyncovf.engine.options import ImportOptions
from asyncovf.ovf.descriptor import parse_descriptor
from asyncovf.ovf.package import Package
from tests.factory import ovf_descriptor

pytestmark = pytest.mark.anyio


class RecordingSession:
    """Just enough of a session to record what CreateImportSpec is called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.content = type("Content", (), {"ovfManager": vim.OvfManager("OvfManager")})()

    async def invoke(self, obj: Any, method: str, **kwargs: Any) -> Any:
        self.calls.append((method, kwargs))
        return vim.OvfManager.CreateImportSpecResult(
            importSpec=vim.VirtualMachineImportSpec())


async def test_locale_and_options_reach_create_import_spec() -> None:
    descriptor = parse_descriptor(ovf_descriptor("p", [("p-disk1.vmdk", 10, 8)]).encode())
    package = Package(location="p.ova", kind="ova", descriptor=descriptor, manifest=None,
                      members={})
    placement = type("P", (), {"resource_pool": type("R", (), {"ref": "pool"})(),
                               "datastore": type("D", (), {"ref": "ds"})()})()
    session = RecordingSession()
    await create_import_spec(session, package, placement, "vm-1",  # type: ignore[arg-type]
                             ImportOptions(locale="de_DE", disk_provisioning="thin",
                                           ip_allocation_policy="fixedPolicy",
                                           ip_protocol="IPv6"))
    ((method, kwargs),) = session.calls
    params = kwargs["cisp"]
    assert method == "CreateImportSpec"
    assert (params.entityName, params.locale, params.diskProvisioning,
            params.ipAllocationPolicy, params.ipProtocol) == (
        "vm-1", "de_DE", "thin", "fixedPolicy", "IPv6")
