"""CreateImportSpec, asked once per group of VMs: each VM's spec is derived from the group's.

vCenter's CreateImportSpec parses the whole descriptor, and the client then
reads its answer and writes it back into ImportVApp: for a fleet of identical
VMs, the same work done once per VM, and the largest single cost in the
client's profile. The answer depends only on what the call is given (the
descriptor, pool, datastore, deployment, provisioning, IP policy and protocol,
the networks mapped, which properties are set) plus the VM's name and its
property values. So :class:`ImportSpecCache` asks once per distinct set of the
former (:func:`spec_key`) and derives each VM's spec from that answer by
changing only the latter (:func:`derive_import_spec`):

* the VM's name (``configSpec.name``);
* the datastore paths that contain it (the VM's directory in disk and ISO
  backings and ``files.vmPathName``, and a file named after the VM in it) and
  the upload items' device ids;
* the property values (``vAppConfig`` property infos; extra config entries are
  the descriptor's, not properties, and stay as they are).

That a derived spec equals the one vCenter would have answered is proved
against the simulator (tests/integration/test_import_spec_reuse.py), not
against every vCenter: one that chose paths differently (a VM folder that
already exists gets another name) refuses the derived spec as
FileAlreadyExists, and the job then asks for its own spec
(:func:`~asyncovf.engine.job.import_vm`). Names a datastore path would
spell differently (escaped characters) and vApp packages (a spec per VM
inside) are never derived: those VMs ask for their own spec.

Concurrent misses of one group share one call; a call that fails is not kept,
so a transient failure is the asking job's alone and the next job asks again.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import anyio
from pyVmomi import VmomiSupport, vim

from asyncovf.engine.marks import IMPORT_MARK_KEY
from asyncovf.engine.options import ImportOptions
from asyncovf.errors import ImportSpecRejected
from asyncovf.ovf.package import Package
from asyncovf.vsphere.inventory import Placement
from asyncovf.vsphere.session import VCenterSession
from asyncovf.vsphere.soap import describe_fault
from asyncovf.vsphere.template import RequestTemplates, sentinel

log = logging.getLogger(__name__)

#: A name vCenter puts into datastore paths as it is: derivable. Any other
#: character may be escaped in a path (``%2f`` for ``/``), so such a name asks
#: for its own spec rather than risk a path vCenter would not have chosen.
_PATH_SAFE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._()+,=@-]*")

SpecKey = tuple[object, ...]


def import_spec_params(package: Package, name: str, options: ImportOptions,
                       networks: Mapping[str, Any] | None = None) -> Any:
    """CreateImportSpec's ``cisp`` for VM ``name``: everything it sends but the descriptor.

    ``networks`` maps OVF network names to network MORs (``options``' mapping,
    resolved).
    """
    params = vim.OvfManager.CreateImportSpecParams(
        entityName=name,
        locale=options.locale or "",
        deploymentOption=options.deployment or package.descriptor.default_deployment or "",
    )
    if options.disk_provisioning:
        params.diskProvisioning = options.disk_provisioning
    if options.ip_allocation_policy:
        params.ipAllocationPolicy = options.ip_allocation_policy
    if options.ip_protocol:
        params.ipProtocol = options.ip_protocol
    if options.properties:
        params.propertyMapping = [vim.KeyValue(key=k, value=v)
                                  for k, v in options.properties.items()]
    if networks:
        params.networkMapping = [
            vim.OvfManager.NetworkMapping(name=ovf_name, network=network)
            for ovf_name, network in networks.items()
        ]
    return params


async def create_import_spec(
    session: VCenterSession,
    package: Package,
    placement: Placement,
    name: str,
    options: ImportOptions,
    networks: Mapping[str, Any] | None = None,
) -> Any:
    """CreateImportSpec; raise :class:`ImportSpecRejected` with vCenter's text on errors."""
    result = await session.invoke(
        session.content.ovfManager,
        "CreateImportSpec",
        ovfDescriptor=package.descriptor.text,
        resourcePool=placement.resource_pool.ref,
        datastore=placement.datastore.ref,
        cisp=import_spec_params(package, name, options, networks),
    )
    if result.error:
        reasons = "; ".join(describe_fault(e) for e in result.error)
        raise ImportSpecRejected(
            f"vCenter rejected {package.location} for {name!r}: {reasons}",
            fault=result.error[0], method="CreateImportSpec", vm=name,
        )
    if result.importSpec is None:
        raise ImportSpecRejected(f"CreateImportSpec returned no import spec for {name!r}",
                                 method="CreateImportSpec", vm=name)
    return result


def spec_key(package: Package, placement: Placement, options: ImportOptions,
             networks: Mapping[str, Any] | None = None) -> SpecKey:
    """What CreateImportSpec's answer depends on, besides the VM's name and property values.

    Built from the very parameters the call sends (:func:`import_spec_params`),
    so two VMs of one key would have sent the same call but for those two.
    Which properties are set is part of the key (a property set or not changes
    the answer); their values are not.
    """
    params = import_spec_params(package, "", options, networks)
    return (
        package.descriptor.text,
        placement.resource_pool.ref._moId,
        placement.datastore.ref._moId,
        params.locale,
        params.deploymentOption,
        params.diskProvisioning,
        params.ipAllocationPolicy,
        params.ipProtocol,
        tuple(sorted(options.properties or {})),
        tuple(sorted((ovf_name, str(network._moId))
                     for ovf_name, network in (networks or {}).items())),
    )


def derivable(name: str) -> bool:
    """A VM name that datastore paths hold unescaped (see :data:`_PATH_SAFE_NAME`)."""
    return _PATH_SAFE_NAME.fullmatch(name) is not None


def derive_import_spec(result: Any, *, name: str, properties: Mapping[str, str],
                       new_name: str, new_properties: Mapping[str, str]) -> Any:
    """A copy of CreateImportSpec's ``result`` for ``name`` and ``properties``, made for
    ``new_name`` and ``new_properties`` (the same keys): see the module's docstring.

    Raises :class:`ValueError` for a result that is not one VM's spec.
    """
    if not isinstance(result.importSpec, vim.vm.VmImportSpec):
        raise ValueError("only a single VM's import spec is derived")
    if set(properties) != set(new_properties):
        raise ValueError("a derived spec sets the same properties as its origin")
    derived = copy_result(result)
    config = derived.importSpec.configSpec
    config.name = new_name
    if config.files is not None and config.files.vmPathName:
        config.files.vmPathName = _renamed_path(config.files.vmPathName, name, new_name)
    for change in config.deviceChange or ():
        backing = getattr(change.device, "backing", None)
        while backing is not None:  # a disk's backing may have a parent chain
            if getattr(backing, "fileName", None):
                backing.fileName = _renamed_path(backing.fileName, name, new_name)
            backing = getattr(backing, "parent", None)
    for item in derived.fileItem or ():
        prefix = f"/{name}/"
        if item.deviceId.startswith(prefix):
            item.deviceId = f"/{new_name}/{item.deviceId[len(prefix):]}"
    vapp = config.vAppConfig
    for spec in (vapp.property if vapp is not None else None) or ():
        info = spec.info
        if info is None:
            continue
        key = property_key(info)
        if key in new_properties:
            info.value = new_properties[key]
    return derived


#: Values a copy may share with its origin: nothing can change them in place
#: (pyVmomi's enums, type names and paths are ``str``, its ``long`` an ``int``).
_IMMUTABLE: Final = (str, int, float, bytes, type(None))


def copy_result(value: Any) -> Any:
    """A deep copy of a deserialized pyVmomi answer, as ``copy.deepcopy`` makes it, faster.

    Data objects and arrays are rebuilt straight from their ``__dict__`` and
    items: every value was checked when the origin was built, so checking it
    again (pyVmomi's ``__setattr__``) and ``deepcopy``'s generic reduce protocol
    are the cost, not the copy. Anything else — managed object references,
    faults (data objects that are also exceptions), dates — goes through
    ``copy.deepcopy`` as before. A deserialized answer shares no object
    between two places, so ``deepcopy``'s memo has nothing to keep.
    """
    if isinstance(value, _IMMUTABLE):
        return value
    if isinstance(value, VmomiSupport.DataObject) and not isinstance(value, BaseException):
        data = object.__new__(type(value))
        data.__dict__.update({k: copy_result(v) for k, v in value.__dict__.items()})
        return data
    if isinstance(value, VmomiSupport.Array) and not getattr(value, "__dict__", None):
        array = type(value)()
        list.extend(array, [copy_result(item) for item in value])
        return array
    return copy.deepcopy(value)


def _renamed_path(path: str, name: str, new_name: str) -> str:
    """``[ds] name/disk-0.vmdk`` → ``[ds] new_name/disk-0.vmdk``, and a file named after
    the VM in it (``name.vmdk``, ``name_1.vmdk``) renamed too; any other path as it is."""
    match = re.match(r"(\[[^\]]*\] ?)" + re.escape(name) + "/", path)
    if match is None:
        return path
    file = path[match.end():]
    if re.match(re.escape(name) + r"[._]", file):
        file = new_name + file[len(name):]
    return f"{match.group(1)}{new_name}/{file}"


def property_key(info: Any) -> str:
    """A vApp property's key as a PropertyMapping names it: ``class.id.instance``."""
    return ".".join(part for part in (info.classId, info.id, info.instanceId) if part)


def _spec_slots(import_spec: Any) -> list[tuple[Any, str]]:
    """The string fields that differ between specs of one group, as (object, attribute).

    What :func:`derive_import_spec` changes (the name, the paths, the property
    values) and what the job sets after it (the annotation, the mark's token),
    in a fixed order:
    specs derived from one origin are equal but for these, which is what lets
    :meth:`ImportSpecCache.import_vapp_request` fill a template instead.
    """
    config = import_spec.configSpec
    slots: list[tuple[Any, str]] = [(config, "name"), (config, "annotation")]
    if config.files is not None:
        slots.append((config.files, "vmPathName"))
    for change in config.deviceChange or ():
        backing = getattr(change.device, "backing", None)
        while backing is not None:
            if hasattr(backing, "fileName"):
                slots.append((backing, "fileName"))
            backing = getattr(backing, "parent", None)
    vapp = config.vAppConfig
    properties = (vapp.property if vapp is not None else None) or ()
    slots.extend((spec.info, "value") for spec in properties if spec.info is not None)
    slots.extend((option, "value") for option in config.extraConfig or ()
                 if option.key == IMPORT_MARK_KEY and type(option.value) is str)
    return slots


@dataclass(frozen=True)
class _Origin:
    """One group's CreateImportSpec answer and the name and properties it was asked for."""

    result: Any
    name: str
    properties: Mapping[str, str]


class ImportSpecCache:
    """One CreateImportSpec per group of a run; each VM's spec derived from its group's.

    Shared by every worker of a run: the answer holds no session's state (its
    MORs are the same in every session), and each caller gets its own copy to
    change (the job adds its annotation and marks).
    """

    def __init__(self) -> None:
        self._origins: dict[SpecKey, _Origin] = {}
        self._locks: dict[SpecKey, anyio.Lock] = {}
        self._templates = RequestTemplates()
        #: CreateImportSpec calls made, and specs derived instead of a call.
        self.asked = 0
        self.derived = 0

    async def get(self, session: VCenterSession, package: Package, placement: Placement,
                  name: str, options: ImportOptions,
                  networks: Mapping[str, Any] | None = None) -> tuple[Any, bool]:
        """The CreateImportSpec result for VM ``name``, and whether it was derived."""
        properties = dict(options.properties or {})
        if not derivable(name):
            return await self.ask(session, package, placement, name, options, networks), False
        key = spec_key(package, placement, options, networks)
        origin = self._origins.get(key)
        if origin is None:
            # Concurrent misses of a group share one call: the first asks, the
            # others wait for its answer (and ask themselves if it failed).
            async with self._locks.setdefault(key, anyio.Lock()):
                origin = self._origins.get(key)
                if origin is None:
                    result = await self.ask(session, package, placement, name, options,
                                            networks)
                    if isinstance(result.importSpec, vim.vm.VmImportSpec):
                        self._origins[key] = _Origin(copy_result(result), name, properties)
                    return result, False
        # Same key: the same properties set, and only a VM's spec is kept.
        derived = derive_import_spec(origin.result, name=origin.name,
                                     properties=origin.properties, new_name=name,
                                     new_properties=properties)
        self.derived += 1
        log.debug("%s: import spec derived from %s's", name, origin.name)
        return derived, True

    def import_vapp_request(self, session: VCenterSession, key: SpecKey, pool: Any,
                            arguments: Mapping[str, Any]) -> bytes:
        """ImportVApp's request for a spec :meth:`get` derived in group ``key``: the text
        pyVmomi would write, filled into the group's template (:mod:`asyncovf.vsphere.template`).

        Serializing the spec is the largest serialization of an import, and
        every VM of a group sends the same one but for :func:`_spec_slots`'s
        strings. The first request of each shape (group, API version, other
        arguments, which slots are set) is pyVmomi's; its template is kept only
        if it reproduces that request exactly, otherwise every request of the
        shape is pyVmomi's.
        """
        spec = arguments["spec"]
        values = [getattr(holder, attr) for holder, attr in _spec_slots(spec)]
        shape = tuple(type(value) is str for value in values)
        others = tuple(sorted((name, type(value).__name__, value._moId)
                              for name, value in arguments.items()
                              if name != "spec" and value is not None))

        def serialize_probe() -> bytes:
            probe = copy_result(spec)
            slots = [slot for slot, used in zip(_spec_slots(probe), shape, strict=True) if used]
            for index, (holder, attr) in enumerate(slots):
                setattr(holder, attr, sentinel(index))
            return session.client.serialize(pool, "ImportVApp", **{**arguments, "spec": probe})

        return self._templates.request(
            (key, session.api_version, type(pool).__name__, pool._moId, others, shape),
            [value for value in values if type(value) is str],
            lambda: session.client.serialize(pool, "ImportVApp", **arguments), serialize_probe)

    async def ask(self, session: VCenterSession, package: Package, placement: Placement,
                  name: str, options: ImportOptions,
                  networks: Mapping[str, Any] | None = None) -> Any:
        """CreateImportSpec for ``name`` alone, counted: a group's first VM, a name no
        spec is derived for, or a VM whose derived spec vCenter refused."""
        self.asked += 1
        return await create_import_spec(session, package, placement, name, options, networks)


__all__ = [
    "ImportSpecCache",
    "create_import_spec",
    "derivable",
    "derive_import_spec",
    "import_spec_params",
    "property_key",
    "spec_key",
]
