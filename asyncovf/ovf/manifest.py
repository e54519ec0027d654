"""OVF manifests (``.mf``): parsing, and digest checking while files stream.

A manifest line reads ``SHA256(disk1.vmdk)= 0123…``. We verify each file as it
is uploaded — the bytes are hashed on their way to vCenter, never read twice —
and fail the import (which aborts the lease) when a digest does not match.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from asyncovf.errors import ManifestError

# Names some tools write for the same algorithms; vCenter is pickier than we are.
_ALGORITHMS: Final = {
    "SHA1": "sha1",
    "SHA256": "sha256",
    "SHA2-256": "sha256",
    "SHA512": "sha512",
    "SHA2-512": "sha512",
}
_DIGEST_LENGTHS: Final = {"sha1": 40, "sha256": 64, "sha512": 128}
_LINE = re.compile(
    r"^\s*(?P<algo>[A-Za-z0-9-]+)\s*\((?P<name>.+)\)\s*=\s*(?P<hex>[0-9a-fA-F]+)\s*$"
)


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    algorithm: str  # hashlib name: sha1, sha256, sha512
    hexdigest: str

    def new_hash(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)


@dataclass(frozen=True)
class Manifest:
    name: str
    entries: dict[str, ManifestEntry]
    raw: bytes = b""  # what a .cert signs

    def entry(self, file_name: str) -> ManifestEntry | None:
        return self.entries.get(file_name)


def parse_manifest(data: bytes, *, name: str = "manifest.mf") -> Manifest:
    """Parse a manifest; every malformed line is an error naming its line number."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"not UTF-8 (byte {exc.start})", file=name) from exc
    entries: dict[str, ManifestEntry] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            raise ManifestError(f"line {number}: not 'ALGO(file)= digest': {line[:80]!r}",
                                file=name)
        algorithm = _ALGORITHMS.get(match["algo"].strip().upper())
        if algorithm is None:
            raise ManifestError(f"line {number}: unsupported digest {match['algo']!r}", file=name)
        hexdigest = match["hex"].lower()
        if len(hexdigest) != _DIGEST_LENGTHS[algorithm]:
            raise ManifestError(
                f"line {number}: {algorithm} digest has {len(hexdigest)} hex digits, "
                f"expected {_DIGEST_LENGTHS[algorithm]}",
                file=name,
            )
        file_name = match["name"].strip()
        if file_name in entries:
            raise ManifestError(f"line {number}: {file_name!r} listed twice", file=name)
        entries[file_name] = ManifestEntry(file_name, algorithm, hexdigest)
    return Manifest(name=name, entries=entries, raw=data)


def check_digest(entry: ManifestEntry, digest: hashlib._Hash, *, manifest: str) -> None:
    """Raise :class:`ManifestError` unless ``digest`` (fed the streamed bytes) matches."""
    actual = digest.hexdigest()
    if actual != entry.hexdigest:
        raise ManifestError(
            f"{entry.algorithm} digest mismatch for {entry.name}: manifest says "
            f"{entry.hexdigest[:16]}…, streamed bytes give {actual[:16]}…",
            file=manifest,
        )


__all__ = ["Manifest", "ManifestEntry", "check_digest", "parse_manifest"]
