"""Build real OVF/OVA packages for tests, benchmarks and the demo.

The descriptor is a genuine OVF 1.x envelope; disks are genuine streamOptimized
VMDKs (header, deflate-compressed grain markers, grain tables, grain directory,
footer and end-of-stream marker, per VMware's Virtual Disk Format 5.0), so the
same files would import into a real vCenter. Contents are pseudo-random from a
seed, so packages are reproducible and incompressible.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import struct
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SECTOR = 512
GRAIN_SECTORS = 128  # 64 KiB grains
GTES_PER_GT = 512
STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"


def _header(capacity_sectors: int, descriptor_sectors: int, gd_offset: int) -> bytes:
    header = struct.pack(
        "<4sIIQQQQIQQQB4sH",
        b"KDMV", 3, 0x30001, capacity_sectors, GRAIN_SECTORS,
        1, descriptor_sectors, GTES_PER_GT, 0, gd_offset,
        1 + descriptor_sectors,  # overhead: header + descriptor
        0, b"\n \r\n", 1,
    )
    return header.ljust(SECTOR, b"\0")


def _marker(value: int, marker_type: int) -> bytes:
    return struct.pack("<QII", value, 0, marker_type).ljust(SECTOR, b"\0")


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % SECTOR)


def stream_optimized_vmdk(capacity_bytes: int, data_bytes: int, seed: int = 0) -> bytes:
    """A streamOptimized VMDK of ``capacity_bytes`` with ``data_bytes`` of random data."""
    capacity_sectors = -(-capacity_bytes // SECTOR)
    grain_bytes = GRAIN_SECTORS * SECTOR
    rng = random.Random(seed)
    descriptor = (
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="streamOptimized"\n\n# Extent description\n'
        f'RW {capacity_sectors} SPARSE "disk.vmdk"\n\n# The Disk Data Base\n#DDB\n\n'
        'ddb.adapterType = "lsilogic"\nddb.virtualHWVersion = "9"\n'
    ).encode()
    descriptor_block = _pad(descriptor)
    descriptor_sectors = len(descriptor_block) // SECTOR

    out = io.BytesIO()
    out.write(_header(capacity_sectors, descriptor_sectors, 0xFFFFFFFFFFFFFFFF))
    out.write(descriptor_block)

    grains = -(-min(data_bytes, capacity_bytes) // grain_bytes)
    total_grains = -(-capacity_sectors // GRAIN_SECTORS)
    grain_offsets = [0] * total_grains
    for index in range(grains):
        grain = rng.randbytes(grain_bytes)
        compressed = zlib.compress(grain, 1)
        grain_offsets[index] = out.tell() // SECTOR
        out.write(_pad(struct.pack("<QI", index * GRAIN_SECTORS, len(compressed)) + compressed))

    tables = -(-total_grains // GTES_PER_GT)
    directory: list[int] = []
    for table in range(tables):
        entries = grain_offsets[table * GTES_PER_GT:(table + 1) * GTES_PER_GT]
        entries += [0] * (GTES_PER_GT - len(entries))
        out.write(_marker(GTES_PER_GT * 4 // SECTOR, 1))
        directory.append(out.tell() // SECTOR)
        out.write(struct.pack(f"<{GTES_PER_GT}I", *entries))
    gd = _pad(struct.pack(f"<{len(directory)}I", *directory))
    out.write(_marker(len(gd) // SECTOR, 2))
    gd_offset = out.tell() // SECTOR
    out.write(gd)
    out.write(_marker(1, 3))
    out.write(_header(capacity_sectors, descriptor_sectors, gd_offset))
    out.write(_marker(0, 0))
    return out.getvalue()


@dataclass(frozen=True)
class DiskSpec:
    capacity_mb: int = 16
    data_bytes: int = 256 * 1024


def ovf_descriptor(
    name: str,
    disks: Sequence[tuple[str, int, int]],
    *,
    cpus: int = 1,
    memory_mb: int = 64,
    network: str = "VM Network",
    compression: str | None = None,
    chunk_size: int | None = None,
    product_section: str = "",
    envelope_sections: str = "",
) -> str:
    """An OVF 1.x envelope; ``disks`` are (file name, file size, capacity MiB).

    ``product_section`` is inserted into the VirtualSystem as it is (e.g.
    :data:`APPLIANCE_PRODUCT_SECTION`); ``envelope_sections`` into the Envelope
    before it (e.g. :data:`DEPLOYMENT_OPTION_SECTION`).
    """
    extra = (f' ovf:compression="{compression}"' if compression else "") + (
        f' ovf:chunkSize="{chunk_size}"' if chunk_size else "")
    files = "\n".join(
        f'    <File ovf:href="{href}" ovf:id="file{i}" ovf:size="{size}"{extra}/>'
        for i, (href, size, _) in enumerate(disks, start=1)
    )
    disk_defs = "\n".join(
        f'    <Disk ovf:capacity="{cap}" ovf:capacityAllocationUnits="byte * 2^20" '
        f'ovf:diskId="vmdisk{i}" ovf:fileRef="file{i}" ovf:format="{STREAM_OPTIMIZED}"/>'
        for i, (_, _, cap) in enumerate(disks, start=1)
    )
    disk_items = "\n".join(
        f"""      <Item>
        <rasd:AddressOnParent>{i - 1}</rasd:AddressOnParent>
        <rasd:ElementName>disk{i - 1}</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk{i}</rasd:HostResource>
        <rasd:InstanceID>{10 + i}</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>"""
        for i in range(1, len(disks) + 1)
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
    xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
{files}
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
{disk_defs}
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="{network}">
      <Description>The {network} network</Description>
    </Network>
  </NetworkSection>
{envelope_sections}  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <Name>{name}</Name>
    <OperatingSystemSection ovf:id="36" vmw:osType="otherLinux64Guest">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-09</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>{cpus} virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{cpus}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>{memory_mb}MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{memory_mb}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:ElementName>scsiController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
{disk_items}
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>{network}</rasd:Connection>
        <rasd:ElementName>ethernet0</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
{product_section}  </VirtualSystem>
</Envelope>
"""


#: Two deployment options, ``small`` (the default) and ``large``, for
#: ``envelope_sections``.
DEPLOYMENT_OPTION_SECTION = """\
  <DeploymentOptionSection>
    <Info>Deployment sizes</Info>
    <Configuration ovf:id="small" ovf:default="true">
      <Label>Small</Label>
      <Description>For tests</Description>
    </Configuration>
    <Configuration ovf:id="large">
      <Label>Large</Label>
      <Description>For tests</Description>
    </Configuration>
  </DeploymentOptionSection>
"""


#: Two user-configurable vApp properties with defaults and one hidden one, as
#: appliances declare them: full keys ``appliance.hostname.web``,
#: ``appliance.port.web`` and ``appliance.token.web``.
APPLIANCE_PRODUCT_SECTION = """\
    <ProductSection ovf:class="appliance" ovf:instance="web">
      <Info>Appliance settings</Info>
      <Product>Test appliance</Product>
      <Vendor>asyncovf tests</Vendor>
      <Version>1.0</Version>
      <Property ovf:key="hostname" ovf:type="string" ovf:userConfigurable="true"
                ovf:value="appliance.local"/>
      <Property ovf:key="port" ovf:type="uint16" ovf:userConfigurable="true" ovf:value="8080"/>
      <Property ovf:key="token" ovf:type="string" ovf:value="a&amp;b&lt;c&quot;"/>
    </ProductSection>
"""


@dataclass(frozen=True)
class BuiltPackage:
    path: Path
    descriptor_name: str
    disk_names: tuple[str, ...]
    cpus: int
    memory_mb: int
    #: What vCenter must receive for each disk (before compression and chunking).
    contents: dict[str, bytes] = field(default_factory=dict, repr=False)


def build_package(
    directory: Path,
    name: str = "sample",
    *,
    disks: Sequence[DiskSpec] = (DiskSpec(),),
    cpus: int = 1,
    memory_mb: int = 64,
    ova: bool = True,
    manifest: bool = True,
    seed: int = 1,
    declared_size_delta: int = 0,
    corrupt_digest: bool = False,
    compression: str | None = None,
    chunk_size: int | None = None,
    network: str = "VM Network",
    product_section: str = "",
    envelope_sections: str = "",
) -> BuiltPackage:
    """Write ``name.ova`` (or a ``name/`` OVF directory) into ``directory``.

    ``declared_size_delta`` makes the descriptor's ``ovf:size`` of the first
    disk lie by that many bytes; ``corrupt_digest`` makes the manifest's digest
    of the first disk wrong. Both build the broken packages tests need.
    ``compression="gzip"`` stores each disk gzipped and ``chunk_size`` splits
    the stored bytes into ``href.000000000``… chunks, as ovftool does; the
    manifest then lists what is stored (each chunk), as the OVF spec says.
    """
    directory.mkdir(parents=True, exist_ok=True)
    contents: list[tuple[str, bytes]] = []
    stored: list[tuple[str, bytes]] = []
    disk_rows: list[tuple[str, int, int]] = []
    for index, spec in enumerate(disks, start=1):
        href = f"{name}-disk{index}.vmdk"
        data = stream_optimized_vmdk(spec.capacity_mb * 2**20, spec.data_bytes, seed + index)
        contents.append((href, data))
        if compression == "gzip":
            data = gzip.compress(data, compresslevel=1, mtime=0)
        if chunk_size:
            stored += [(f"{href}.{i:09d}", data[start:start + chunk_size])
                       for i, start in enumerate(range(0, len(data), chunk_size))]
        else:
            stored.append((href, data))
        declared = len(data) + (declared_size_delta if index == 1 else 0)
        disk_rows.append((href, declared, spec.capacity_mb))
    descriptor_name = f"{name}.ovf"
    descriptor = ovf_descriptor(name, disk_rows, cpus=cpus, memory_mb=memory_mb,
                                compression=compression, chunk_size=chunk_size,
                                network=network, product_section=product_section,
                                envelope_sections=envelope_sections).encode()
    members: list[tuple[str, bytes]] = [(descriptor_name, descriptor), *stored]
    if manifest:
        lines = []
        for index, (member_name, data) in enumerate(members):
            digest = hashlib.sha256(data).hexdigest()
            if corrupt_digest and index == 1:
                digest = hashlib.sha256(data + b"x").hexdigest()
            lines.append(f"SHA256({member_name})= {digest}\n")
        members.append((f"{name}.mf", "".join(lines).encode()))

    if ova:
        path = directory / f"{name}.ova"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for member_name, data in members:
                info = tarfile.TarInfo(member_name)
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    else:
        path = directory / name
        path.mkdir(exist_ok=True)
        for member_name, data in members:
            (path / member_name).write_bytes(data)
    return BuiltPackage(path, descriptor_name, tuple(h for h, _ in contents), cpus, memory_mb,
                        contents=dict(contents))


__all__ = ["APPLIANCE_PRODUCT_SECTION", "DEPLOYMENT_OPTION_SECTION", "BuiltPackage", "DiskSpec",
           "build_package", "ovf_descriptor", "stream_optimized_vmdk"]
