"""Request templates: a filled template is byte for byte the request pyVmomi would write.

ImportVApp of a derived spec and the property collector's polls are sent from
templates (asyncovf/vsphere/template.py); what vCenter gets must not change.
So each is compared with pyVmomi's own serialization of the very objects it
stands for, over names and values that XML treats specially.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pyVmomi import vim, vmodl

from asyncovf.engine.import_specs import ImportSpecCache, derive_import_spec
from asyncovf.engine.job import _mark_unfinished, import_vapp_arguments
from asyncovf.engine.marks import new_token
from asyncovf.engine.options import ImportOptions
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.session import VCenterSession
from asyncovf.vsphere.soap import Endpoint, SoapClient
from asyncovf.vsphere.template import RequestTemplate, sentinel
from tests.unit.test_import_spec_derivation import KEY, vcenter_answer

NAMES = ["web-02", "web (3)", "a+b=c@d,e.f_g", "x"]
VALUES = ["plain", "a & b", "<tag attr=\"v\">", "it's ]]> &amp;", "", "ünïcødé \u2603",
          "\ue000 0 \ue001"]


class CountingClient(SoapClient):
    """A real client's serializer, counting how often pyVmomi serializes."""

    def __init__(self) -> None:
        super().__init__(Endpoint.parse("vc.invalid"))
        self.serialized = 0

    def serialize(self, mo: Any, method: str, **kwargs: Any) -> bytes:
        self.serialized += 1
        return super().serialize(mo, method, **kwargs)


def placement(*, vapp: bool = False) -> Any:
    pool = vim.VirtualApp("resgroup-v9") if vapp else vim.ResourcePool("resgroup-8")
    return SimpleNamespace(resource_pool=SimpleNamespace(ref=pool),
                           folder=SimpleNamespace(ref=vim.Folder("group-v3")),
                           host=SimpleNamespace(ref=vim.HostSystem("host-21")))


@pytest.mark.parametrize("vapp", [False, True])
@pytest.mark.parametrize("annotation", [None, "made by <ops> & co"])
def test_a_derived_specs_import_vapp_request_is_pyvmomis(vapp: bool,
                                                         annotation: str | None) -> None:
    client = CountingClient()
    session = SimpleNamespace(client=client, api_version="8.0.1.0")
    cache = ImportSpecCache()
    where = placement(vapp=vapp)
    pool = where.resource_pool.ref
    origin = vcenter_answer("web-01", "web-01.example")
    options = ImportOptions(annotation=annotation)
    for name in NAMES:
        for value in VALUES:
            spec = derive_import_spec(origin, name="web-01",
                                      properties={KEY: "web-01.example"},
                                      new_name=name, new_properties={KEY: value})
            _mark_unfinished(spec, options, new_token())  # a token per call, as a job's
            arguments = import_vapp_arguments(where, spec.importSpec)
            expected = SoapClient.serialize(client, pool, "ImportVApp", **arguments)
            assert cache.import_vapp_request(session, ("group",), pool,  # type: ignore[arg-type]
                                             arguments) == expected, (name, value)
    # One shape: pyVmomi wrote the first request and the template's probe, no more.
    assert client.serialized == 2


def test_a_property_value_that_is_not_set_is_another_shape() -> None:
    client = CountingClient()
    session = SimpleNamespace(client=client, api_version="8.0.1.0")
    cache = ImportSpecCache()
    where = placement()
    pool = where.resource_pool.ref
    origin = vcenter_answer("web-01", "web-01.example")
    for value in ["set", None, "set & again"]:
        spec = derive_import_spec(origin, name="web-01", properties={},
                                  new_name="web-02", new_properties={})
        spec.importSpec.configSpec.vAppConfig.property[0].info.value = value
        arguments = import_vapp_arguments(where, spec.importSpec)
        expected = SoapClient.serialize(client, pool, "ImportVApp", **arguments)
        assert cache.import_vapp_request(session, ("group",), pool,  # type: ignore[arg-type]
                                         arguments) == expected


def poll_session() -> tuple[VCenterSession, CountingClient]:
    session = VCenterSession(ConnectionSettings("vc.invalid", "user", "secret"))
    client = session.client = CountingClient()
    session._content = SimpleNamespace(
        propertyCollector=vmodl.query.PropertyCollector("propertyCollector"),
        about=SimpleNamespace(apiVersion="8.0.1.0"))
    return session, client


@pytest.mark.parametrize("paths", [["state", "error", "info"], ["info"], ["guest.ipAddress"]])
def test_a_poll_request_is_pyvmomis(paths: list[str]) -> None:
    session, client = poll_session()
    ids = ["session[4f1c]52a0-77", "task-76", "vm-1", "odd & <id>", "\ue000 0 \ue001"]
    for kind in (vim.HttpNfcLease, vim.Task, vim.VirtualMachine):
        for moid in ids:
            obj = kind(moid, client._stub)
            spec = vmodl.query.PropertyCollector.FilterSpec(
                objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=obj, skip=False)],
                propSet=[vmodl.query.PropertyCollector.PropertySpec(
                    type=kind, pathSet=paths, all=False)])
            options = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=100)
            expected = SoapClient.serialize(client, session.content.propertyCollector,
                                            "RetrievePropertiesEx", specSet=[spec],
                                            options=options)
            assert session._retrieve_request(obj, paths) == expected, (kind, moid)
    # Per shape (object type), the first request and the template's probe.
    assert client.serialized == 3 * 2


def test_a_template_needs_each_sentinel_once() -> None:
    body = f"<a>{sentinel(0)}</a><b>{sentinel(1)}</b>".encode()
    template = RequestTemplate.build(body, 2)
    assert template is not None and template.fill(["x&", "y"]) == b"<a>x&amp;</a><b>y</b>"
    assert RequestTemplate.build(body, 3) is None  # one did not come out
    assert RequestTemplate.build(body + sentinel(1).encode(), 2) is None  # one came out twice
    assert RequestTemplate.build(f"<a>{sentinel(0)}\ue000</a>".encode(), 1) is None
