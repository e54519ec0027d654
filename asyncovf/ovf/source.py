"""Opening a source: an OVA, an OVF file or directory, local or over http(s).

Above :mod:`asyncovf.ovf.package` (what a package is) and
:mod:`asyncovf.ovf.content` (what vCenter receives for one of its files): opening
a package reads its descriptor and manifest, then measures every compressed file
by decompressing it once, which needs the content pipeline.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace

from asyncovf.errors import AsyncOvfError, PackageError, SourceError
from asyncovf.ovf.blobs import HttpSourceSettings, blob_for
from asyncovf.ovf.content import measure_content
from asyncovf.ovf.package import Package, check_compression, check_parts, open_unmeasured
from asyncovf.ovf.xml import DEFAULT_MAX_DESCRIPTOR_BYTES

log = logging.getLogger(__name__)


async def open_package(
    location: str | os.PathLike[str],
    *,
    max_descriptor_bytes: int = DEFAULT_MAX_DESCRIPTOR_BYTES,
    http: HttpSourceSettings | None = None,
    measure_compressed: bool = True,
) -> Package:
    """Open an ``.ova``, an ``.ovf`` or a directory holding one ``.ovf`` — a path or a URL.

    ``measure_compressed`` decompresses each gzip-compressed file once, here,
    to learn how many bytes vCenter will receive (an NFC upload needs its
    length up front). ``asyncovf spec`` does not upload and skips it. A file
    that decompresses past its bound (``PackageFile.expanded_limit``: a disk's
    capacity and a small margin) is refused as soon as it passes it, so a gzip
    bomb costs its bound's bytes, here and in ``--dry-run``.

    Whatever goes wrong is a :class:`PackageError`, even an error nothing here
    foresaw (:func:`unreadable_source`): a hostile package must fail its own
    jobs, never the run. A cancellation goes on unchanged.
    """
    try:
        package = await open_unmeasured(location, max_descriptor_bytes, http)
        if measure_compressed:
            package = await measure_compressed_files(package)
    except SourceError as exc:
        # Opening is the package's problem from the job's point of view: it fails
        # the jobs that use it, before any lease is taken.
        raise PackageError(str(exc), file=None) from exc
    except AsyncOvfError:
        raise
    except Exception as exc:
        raise unreadable_source(location, exc, http) from exc
    return package


def unreadable_source(location: str | os.PathLike[str], exc: Exception,
                      http: HttpSourceSettings | None = None) -> PackageError:
    """``exc``, raised while opening ``location`` and not translated, as its refusal.

    One line naming the source, the error's type and its message (a ValueError
    from a header field nothing checked is not a batch's crash, nor silence);
    the traceback goes to the debug log (``--debug``), for the bug it may be.
    """
    display = blob_for(location, http).display  # a URL without its credentials
    log.debug("%s: opening failed", display, exc_info=exc)
    detail = " ".join(str(exc).split())
    return PackageError(f"cannot be read: {type(exc).__name__}" + (f": {detail}" if detail else ""),
                        file=display)


async def measure_compressed_files(package: Package) -> Package:
    compressed = [f for f in package.files.values() if f.compression]
    if not compressed:
        return package
    check_compression(package)
    files = dict(package.files)
    for found in compressed:
        check_parts(package, found.ref, found)
        log.info("%s: measuring %s (%s-compressed) before upload", package.location, found.href,
                 found.compression)
        files[found.href] = replace(found, content_size=await measure_content(package, found))
    return replace(package, files=files)


__all__ = ["measure_compressed_files", "open_package", "unreadable_source"]
