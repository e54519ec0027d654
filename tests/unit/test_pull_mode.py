"""Pull mode's pieces that need no vCenter: which packages a host can pull, the
HttpNfcLeaseSourceFile each file item becomes, and how a run reports pulls."""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pyVmomi import vim
from pyVmomi.SoapAdapter import Serialize

from asyncovf.engine.pull import PULL_DIGESTS, PULL_NOT_USED, pull_files, unpullable
from asyncovf.ovf.blobs import HttpBlob, LocalBlob
from asyncovf.ovf.package import Member, Package, PackageFile
from asyncovf.report import pull_warnings, totals_line
from asyncovf.vsphere.soap import pick_api_version

OVA = "https://ops:s%40cret@mirror.example:8443/appliances/web.ova"


def package(kind: str, files: dict[str, tuple[Member, ...]],
            compression: str | None = None) -> Any:
    """A package with just what pull mode reads: its kind and its files' members."""
    return Package(location="test", kind=kind, descriptor=None,  # type: ignore[arg-type]
                   manifest=None, members={}, files={
                       href: PackageFile(ref=SimpleNamespace(  # type: ignore[arg-type]
                           href=href, compression=compression), parts=parts,
                           content_size=sum(p.size for p in parts))
                       for href, parts in files.items()})


def answer(*items: tuple[str, str, bool]) -> Any:
    return vim.OvfManager.CreateImportSpecResult(fileItem=[
        vim.OvfManager.FileItem(deviceId=device, path=path, create=create, size=1)
        for device, path, create in items])


def test_an_ova_member_is_pulled_from_the_ova_without_the_credentials_in_its_url() -> None:
    blob = HttpBlob(OVA)
    ova = package("ova", {"disk1.vmdk": (Member("disk1.vmdk", blob, 1536, 4096),),
                          "boot.iso": (Member("boot.iso", blob, 6144, 2048),)})
    assert unpullable(ova) is None
    files = pull_files(answer(("/web/disk:0", "disk1.vmdk", False),
                              ("/web/cdrom:0", "boot.iso", True)),
                       ova, {"mirror.example:8443": "AB:CD"})
    secret = "Basic " + base64.b64encode(b"ops:s@cret").decode()
    plain = "https://mirror.example:8443/appliances/web.ova"
    assert [(f.device_id, f.url, f.member_name, f.size, f.create, f.ssl_thumbprint, f.headers)
            for f in files] == [
        ("/web/disk:0", plain, "disk1.vmdk", 4096, False, "AB:CD", (("Authorization", secret),)),
        ("/web/cdrom:0", plain, "boot.iso", 2048, True, "AB:CD", (("Authorization", secret),))]
    source = files[0].source_file()
    assert (source.targetDeviceId, source.url, source.memberName, source.size, source.create,
            source.sslThumbprint) == ("/web/disk:0", plain, "disk1.vmdk", 4096, False, "AB:CD")
    assert [(h.key, h.value) for h in source.httpHeaders] == [("Authorization", secret)]
    # What goes on the wire is a 6.7 HttpNfcLeaseSourceFile, the password nowhere in clear.
    wire = Serialize(source, version=pick_api_version("6.7")).decode()
    assert "s@cret" not in wire and "s%40cret" not in wire


def test_a_file_of_an_ovf_on_a_web_server_is_its_own_url_with_no_member_name() -> None:
    disk = HttpBlob("http://mirror.example/web/disk1.vmdk")
    ovf = package("ovf", {"disk1.vmdk": (Member("disk1.vmdk", disk, 0, 4096),)})
    (pulled,) = pull_files(answer(("/web/disk:0", "disk1.vmdk", False)), ovf, {})
    assert (pulled.url, pulled.member_name, pulled.ssl_thumbprint, pulled.headers) == \
        ("http://mirror.example/web/disk1.vmdk", None, None, ())
    assert pulled.source_file().httpHeaders is None


def test_what_a_host_cannot_pull_is_said_in_one_line() -> None:
    web = HttpBlob("http://mirror.example/web/disk1.vmdk")
    local = LocalBlob(Path("/srv/web/disk1.vmdk"))
    assert unpullable(package("ovf", {"disk1.vmdk": (Member("disk1.vmdk", web, 0, 9),)},
                              compression="gzip")) == \
        "disk1.vmdk is gzip-compressed (the host cannot unpack it)"
    assert unpullable(package("ovf", {"disk1.vmdk": (Member("disk1.vmdk.000000000", web, 0, 9),
                                                     Member("disk1.vmdk.000000001", web, 0, 9))
                                      })) == "disk1.vmdk is not one file on a web server"
    assert unpullable(package("ovf", {"disk1.vmdk": (Member("disk1.vmdk", local, 0, 9),)})) \
        == "disk1.vmdk is not one file on a web server"


def test_a_run_says_once_how_many_jobs_were_pulled_and_why_others_were_not() -> None:
    why = f"{PULL_NOT_USED}: the lease's host does not support pull mode"
    report = {"jobs": [{"pulled": True, "bytes": 2**20, "warnings": []},
                       {"pulled": True, "bytes": 2**20, "warnings": []},
                       {"pulled": False, "bytes": 2**20, "warnings": [why]},
                       {"pulled": False, "bytes": 2**20, "warnings": [why, "vCenter's own"]}],
              "totals": {"jobs": 4, "imported": 4, "skipped": 0, "failed": 0, "aborted": 0,
                         "imports_per_second": 2.0, "seconds": 2.0, "bytes": 4 * 2**20}}
    assert pull_warnings(report) == [f"2 jobs pulled by the hosts; digests: {PULL_DIGESTS}",
                                     f"{why} (2 jobs)"]
    assert totals_line(report).endswith("(2.0 imports/s, 2.0 MiB uploaded, "
                                        "2.0 MiB pulled by the hosts)")
    assert pull_warnings({"jobs": [{"pulled": False, "warnings": []}]}) == []
