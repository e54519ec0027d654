"""Package sources beyond a local OVA: web servers (with and without Range),
gzip-compressed files and chunked files — and the ways each can be broken."""

from __future__ import annotations

import datetime
import gzip
import hashlib
import shutil
import ssl
import tarfile
from pathlib import Path

import anyio
import pytest
import trustme

from asyncovf.errors import ManifestError, PackageError, SourceError
from asyncovf.ovf.blobs import HttpSourceSettings
from asyncovf.ovf.content import open_content
from asyncovf.ovf.package import Package, check_files
from asyncovf.ovf.source import open_package
from tests.factory import BuiltPackage, DiskSpec, build_package
from tests.httpserver import serve_directory

pytestmark = pytest.mark.anyio

DISKS = (DiskSpec(16, 900_000), DiskSpec(8, 5_000))


async def content_of(package: Package, href: str, *, chunk_size: int = 65536,
                     verify: bool = True) -> bytes:
    async with open_content(package, href, verify=verify, chunk_size=chunk_size) as content:
        chunks = [chunk async for chunk in content.chunks()]
    data = b"".join(chunks)
    assert len(data) == content.size
    assert max(map(len, chunks)) <= chunk_size
    return data


async def assert_streams_exactly(package: Package, built: BuiltPackage) -> None:
    check_files(package)
    for href in built.disk_names:
        assert await content_of(package, href) == built.contents[href]


# --- web servers ---------------------------------------------------------------------


@pytest.mark.parametrize("ranges", [True, False], ids=["range", "no-range"])
async def test_an_ova_on_a_web_server_streams_exactly_its_disks(
    tmp_path: Path, ranges: bool, caplog: pytest.LogCaptureFixture
) -> None:
    built = build_package(tmp_path, "web", disks=DISKS)
    async with serve_directory(tmp_path, ranges=ranges) as served:
        package = await open_package(served.url("web.ova"))
        assert package.kind == "ova" and package.location == served.url("web.ova")
        await assert_streams_exactly(package, built)
        if ranges:
            # The header walk jumps over disk data with Range requests, never reading it.
            assert served.range_gets["web.ova"] >= len(DISKS)
            assert "ignores Range" not in caplog.text
        else:
            assert "the server ignores Range requests" in caplog.text


async def test_an_ovf_directory_on_a_web_server_resolves_files_next_to_it(
    tmp_path: Path
) -> None:
    built = build_package(tmp_path, "dir", disks=DISKS, ova=False)
    async with serve_directory(tmp_path, head=False) as served:  # no HEAD: sizes via Range
        package = await open_package(served.url("dir/dir.ovf"))
        assert package.kind == "ovf" and package.manifest is not None
        await assert_streams_exactly(package, built)


async def test_https_sources_are_verified_against_the_given_ca(tmp_path: Path) -> None:
    built = build_package(tmp_path, "tls", disks=DISKS[1:])
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with serve_directory(tmp_path, ssl_context=server_context) as served:
        with pytest.raises(PackageError, match="certificate verify failed"):
            await open_package(served.url("tls.ova"))
        package = await open_package(served.url("tls.ova"),
                                     http=HttpSourceSettings(ca_file=str(ca_file)))
        await assert_streams_exactly(package, built)


async def test_a_missing_url_is_a_clear_package_error(tmp_path: Path) -> None:
    async with serve_directory(tmp_path) as served:
        with pytest.raises(PackageError) as caught:
            await open_package(served.url("nope.ova"))
    assert str(caught.value) == f"{served.url('nope.ova')}: no such file or directory"


async def test_credentials_in_a_url_never_reach_messages(tmp_path: Path) -> None:
    async with serve_directory(tmp_path) as served:
        url = served.url("nope.ova").replace("http://", "http://ops:s3cret@")
        with pytest.raises(PackageError) as caught:
            await open_package(url)
    assert "s3cret" not in str(caught.value) and "127.0.0.1" in str(caught.value)


async def test_a_dropped_connection_mid_disk_is_a_retryable_source_error(
    tmp_path: Path
) -> None:
    built = build_package(tmp_path, "flaky", disks=DISKS[:1])
    async with serve_directory(tmp_path) as served:
        package = await open_package(served.url("flaky.ova"))
        served.cut["flaky.ova"] = (300_000, 1)  # the next GET dies after 300 kB
        with pytest.raises(SourceError) as caught:
            await content_of(package, built.disk_names[0])
        assert caught.value.status is None  # no HTTP status: a transient failure
        # A fresh attempt reopens the source and gets every byte.
        assert await content_of(package, built.disk_names[0]) == \
            built.contents[built.disk_names[0]]


# --- gzip and chunks -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("compression", "chunk_size", "ova"),
    [("gzip", None, True), (None, 200_000, True), ("gzip", 150_000, True),
     ("gzip", 150_000, False)],
    ids=["gzip-ova", "chunked-ova", "gzip-chunked-ova", "gzip-chunked-directory"],
)
async def test_compressed_and_chunked_files_stream_their_original_bytes(
    tmp_path: Path, compression: str | None, chunk_size: int | None, ova: bool
) -> None:
    built = build_package(tmp_path, "packed", disks=DISKS, ova=ova, compression=compression,
                          chunk_size=chunk_size)
    package = await open_package(built.path)
    await assert_streams_exactly(package, built)
    first = package.file(built.disk_names[0])
    assert package.content_size(first.href) == len(built.contents[first.href])
    if chunk_size:
        assert len(first.parts) > 1
        assert [p.name for p in first.parts][:2] == [f"{first.href}.000000000",
                                                     f"{first.href}.000000001"]


async def test_a_gzip_ova_on_a_web_server_without_range(tmp_path: Path) -> None:
    built = build_package(tmp_path, "gzweb", disks=DISKS, compression="gzip",
                          chunk_size=300_000)
    async with serve_directory(tmp_path, ranges=False) as served:
        package = await open_package(served.url("gzweb.ova"))
        await assert_streams_exactly(package, built)


async def test_spec_does_not_need_to_decompress(tmp_path: Path) -> None:
    built = build_package(tmp_path, "nomeasure", disks=DISKS[:1], compression="gzip")
    package = await open_package(built.path, measure_compressed=False)
    with pytest.raises(PackageError, match="size of its decompressed content was not measured"):
        package.content_size(built.disk_names[0])


def _rewrite_manifest(directory: Path, name: str, replace: dict[str, bytes]) -> None:
    """Store new bytes for some members and give the manifest their digests."""
    for member, data in replace.items():
        (directory / member).write_bytes(data)
    manifest = directory / f"{name}.mf"
    lines = []
    for line in manifest.read_text().splitlines():
        member = line[line.index("(") + 1:line.index(")")]
        if member in replace:
            line = f"SHA256({member})= {hashlib.sha256(replace[member]).hexdigest()}"
        lines.append(line + "\n")
    manifest.write_text("".join(lines))


def _replace_stored(built: BuiltPackage, href: str, data: bytes) -> None:
    """Swap a stored file for ``data``, with a descriptor and manifest that agree."""
    old_size = (built.path / href).stat().st_size
    descriptor = built.path / built.descriptor_name
    descriptor.write_text(descriptor.read_text().replace(f'ovf:size="{old_size}"',
                                                         f'ovf:size="{len(data)}"'))
    _rewrite_manifest(built.path, built.descriptor_name[:-4],
                      {href: data, built.descriptor_name: descriptor.read_bytes()})


async def test_a_truncated_gzip_file_is_refused_when_opened(tmp_path: Path) -> None:
    built = build_package(tmp_path, "cut", disks=DISKS[:1], ova=False, compression="gzip")
    href = built.disk_names[0]
    _replace_stored(built, href, (built.path / href).read_bytes()[:-50])
    with pytest.raises(PackageError, match=f"{href}: gzip data ends early"):
        await open_package(built.path)


async def test_data_that_is_not_gzip_is_refused_when_opened(tmp_path: Path) -> None:
    built = build_package(tmp_path, "notgz", disks=DISKS[:1], ova=False, compression="gzip")
    href = built.disk_names[0]
    _replace_stored(built, href, b"\x1f\x8b\x08\x00" + b"\xff" * 4000)
    with pytest.raises(PackageError, match=f"{href}: not valid gzip data"):
        await open_package(built.path)


async def test_a_gzip_file_that_grows_after_measuring_is_stopped_at_the_measured_size(
    tmp_path: Path
) -> None:
    """A gzip bomb (or a file swapped after the check) cannot push more than was
    measured: output is bounded, and the surplus is an error, not an upload."""
    built = build_package(tmp_path, "bomb", disks=DISKS[:1], ova=False, compression="gzip")
    href = built.disk_names[0]
    package = await open_package(built.path)
    stored_size = package.file(href).stored_size
    bomb = gzip.compress(b"\0" * 50_000_000)
    _rewrite_manifest(built.path, "bomb", {href: bomb + bytes(stored_size - len(bomb))})
    with pytest.raises(PackageError, match="decompresses to more than the \\d+ bytes measured"):
        await content_of(package, href, verify=False, chunk_size=1 << 20)


async def test_concatenated_gzip_members_decompress_as_one_file(tmp_path: Path) -> None:
    built = build_package(tmp_path, "multi", disks=DISKS[:1], ova=False, compression="gzip")
    href = built.disk_names[0]
    original = built.contents[href]
    half = len(original) // 2
    _replace_stored(built, href, gzip.compress(original[:half]) + gzip.compress(original[half:]))
    package = await open_package(built.path)
    assert await content_of(package, href) == original


async def test_a_missing_chunk_is_named(tmp_path: Path) -> None:
    built = build_package(tmp_path, "holes", disks=DISKS[:1], ova=False, chunk_size=200_000)
    (built.path / f"{built.disk_names[0]}.000000002").unlink()
    package = await open_package(built.path)
    with pytest.raises(PackageError, match=f"chunk {built.disk_names[0]}.000000002 is missing"):
        check_files(package, verify_manifest=False)


async def test_a_chunk_of_the_wrong_size_is_named(tmp_path: Path) -> None:
    built = build_package(tmp_path, "uneven", disks=DISKS[:1], ova=False, chunk_size=200_000)
    chunk = built.path / f"{built.disk_names[0]}.000000001"
    chunk.write_bytes(chunk.read_bytes()[:-10])
    package = await open_package(built.path)
    with pytest.raises(PackageError, match=f"chunk {chunk.name} is 199990 bytes, not its "
                                           "ovf:chunkSize=200000"):
        check_files(package, verify_manifest=False)


async def test_each_chunk_is_verified_against_its_own_manifest_line(tmp_path: Path) -> None:
    built = build_package(tmp_path, "badchunk", disks=DISKS[:1], ova=False, chunk_size=200_000)
    chunk = built.path / f"{built.disk_names[0]}.000000001"
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0xFF
    chunk.write_bytes(bytes(data))
    package = await open_package(built.path)
    check_files(package)
    with pytest.raises(ManifestError, match=f"sha256 digest mismatch for {chunk.name}"):
        await content_of(package, built.disk_names[0])
    # without verification the same bytes stream (operator's explicit choice)
    assert len(await content_of(package, built.disk_names[0], verify=False)) == \
        len(built.contents[built.disk_names[0]])


async def test_a_digest_mismatch_stops_before_the_last_chunk_is_passed_on(
    tmp_path: Path
) -> None:
    built = build_package(tmp_path, "late", disks=DISKS[:1], corrupt_digest=True)
    package = await open_package(built.path)
    received = 0
    with pytest.raises(ManifestError):
        async with open_content(package, built.disk_names[0], chunk_size=65536) as content:
            async for chunk in content.chunks():
                received += len(chunk)
    assert 0 < received < package.content_size(built.disk_names[0])


async def test_unsupported_compression_is_refused_before_any_upload(tmp_path: Path) -> None:
    built = build_package(tmp_path, "lzma", disks=DISKS[:1], ova=False, compression="xz")
    with pytest.raises(PackageError, match="ovf:compression='xz' is not supported"):
        await open_package(built.path)


async def test_a_hostile_member_in_a_remote_ova_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil"
    evil.mkdir()
    built = build_package(evil, "e", disks=DISKS[:1])
    shutil.copy(built.path, tmp_path / "e.ova")
    with tarfile.open(tmp_path / "e.ova", "a") as tar:
        info = tarfile.TarInfo("../escape.vmdk")
        tar.addfile(info)
    async with serve_directory(tmp_path) as served:
        with pytest.raises(PackageError, match="member '../escape.vmdk' escapes the package"):
            await open_package(served.url("e.ova"))


# --- signatures ----------------------------------------------------------------------


def _sign(built: BuiltPackage, subject: str = "Appliance Vendor") -> None:
    """Write ``name.cert`` as ovftool does: RSA/SHA256 over the manifest, then the cert."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    stem = built.descriptor_name[:-4]
    manifest = (built.path / f"{stem}.mf").read_bytes()
    signature = key.sign(manifest, padding.PKCS1v15(), hashes.SHA256())
    (built.path / f"{stem}.cert").write_bytes(
        f"SHA256({stem}.mf)= {signature.hex()}\n".encode()
        + cert.public_bytes(serialization.Encoding.PEM))


async def test_a_valid_signature_is_verified_and_its_signer_reported(tmp_path: Path) -> None:
    built = build_package(tmp_path, "signed", disks=DISKS[1:], ova=False)
    _sign(built)
    package = await open_package(built.path)
    check_files(package)
    signature = package.signature()
    assert signature is not None and signature.valid and signature.self_signed
    assert signature.describe() == ("signature verifies; signed by CN=Appliance Vendor "
                                    "(SHA256); self-signed certificate; signer trust not checked")


async def test_a_manifest_changed_after_signing_is_refused(tmp_path: Path) -> None:
    built = build_package(tmp_path, "resigned", disks=DISKS[1:], ova=False)
    _sign(built)
    manifest = built.path / "resigned.mf"
    manifest.write_text(manifest.read_text().replace("SHA256", "SHA256 ", 1))
    package = await open_package(built.path)
    with pytest.raises(PackageError, match="signature does NOT verify: the manifest "
                                           "resigned.mf was changed after signing"):
        check_files(package)
    check_files(package, verify_manifest=False)  # the operator's explicit choice


async def test_a_certificate_without_a_manifest_is_refused(tmp_path: Path) -> None:
    built = build_package(tmp_path, "nomf", disks=DISKS[1:], ova=False)
    _sign(built)
    (built.path / "nomf.mf").unlink()
    package = await open_package(built.path)
    with pytest.raises(PackageError, match="has a certificate but no manifest"):
        check_files(package)


async def test_a_garbled_certificate_file_is_named(tmp_path: Path) -> None:
    built = build_package(tmp_path, "garbled", disks=DISKS[1:], ova=False)
    (built.path / "garbled.cert").write_text("hello\n")
    package = await open_package(built.path)
    with pytest.raises(PackageError, match="certificate file has no 'SHA256\\(name.mf\\)= "
                                           "signature' line"):
        check_files(package)


@pytest.mark.parametrize("how", ["break", "raise", "cancel"])
async def test_a_consumer_leaving_early_stops_the_reader(tmp_path: Path, how: str) -> None:
    """The reader thread hands chunks over one at a time; a consumer that stops
    (an upload failing, Ctrl-C) must not leave it blocked holding the file."""
    built = build_package(tmp_path, "early", disks=(DiskSpec(64, 8 * 2**20),))
    package = await open_package(built.path)
    got = 0
    with anyio.fail_after(30):  # a hang guard, not a speed assertion
        with anyio.CancelScope() as scope:
            try:
                async with open_content(package, built.disk_names[0],
                                        chunk_size=65536) as content:
                    async for chunk in content.chunks():
                        got += len(chunk)
                        if how == "break":
                            break
                        if how == "raise":
                            raise RuntimeError("vCenter went away")
                        scope.cancel()
                        await anyio.sleep(1)
            except RuntimeError as exc:
                assert str(exc) == "vCenter went away"
    assert got == 65536
    assert scope.cancelled_caught is (how == "cancel")
