"""Hardened XML parsing: the only place that configures lxml.

OVF descriptors come from vendors and sometimes from attackers. The parser
therefore never expands entities, never loads a DTD, never touches the network,
and refuses documents over a size cap before parsing them at all.
"""

from __future__ import annotations

import re
from typing import Any, Final

from lxml import etree

from asyncovf.errors import PackageError

#: Real descriptors are well under 1 MiB (the largest in our corpus is ~600 KiB);
#: 16 MiB leaves room for huge vApps while bounding memory.
DEFAULT_MAX_DESCRIPTOR_BYTES: Final = 16 * 1024 * 1024


_DOCTYPE = re.compile(rb"<!DOCTYPE", re.IGNORECASE)
_ROOT_START = re.compile(rb"<[^?!]")


def _prolog(data: bytes) -> bytes:
    """The bytes before the root element (where a DOCTYPE would have to be)."""
    match = _ROOT_START.search(data)
    return data[: match.start()] if match else data


def _parser(*, recover: bool = False) -> etree.XMLParser:
    return etree.XMLParser(
        recover=recover,
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_comments=False,
    )


def _error_types(log: Any) -> set[str]:
    """Type names of the errors in an lxml error log (lxml-stubs do not type it)."""
    return {str(entry.type_name) for entry in log.filter_from_errors()}


def _tolerate_bad_namespace_uris(
    data: bytes, error: etree.XMLSyntaxError
) -> etree._Element | None:
    """Accept a descriptor whose only fault is a namespace name that is not a valid URI.

    Real appliances ship ``xmlns:epasd="…/cim2608 schema/…"`` (a space in the
    URI); vCenter and govc import them, and a namespace name is only a label
    to us. Any other error, in the strict or the tolerant pass, still refuses.
    """
    # The exception's own code, not its error_log: lxml may carry earlier
    # documents' errors there.
    code: Any = getattr(error, "code", None)  # lxml-stubs omit XMLSyntaxError.code
    if code != etree.ErrorTypes.WAR_NS_URI:
        return None
    parser = _parser(recover=True)
    try:
        root = etree.fromstring(data, parser=parser)
    except etree.XMLSyntaxError:
        return None
    if root is None or _error_types(parser.error_log) != {"WAR_NS_URI"}:
        return None
    return root


def parse_xml(
    data: bytes, *, name: str, max_bytes: int = DEFAULT_MAX_DESCRIPTOR_BYTES
) -> etree._Element:
    """Parse ``data`` safely; raise :class:`PackageError` naming ``name`` on any problem."""
    if len(data) > max_bytes:
        raise PackageError(
            f"descriptor is {len(data)} bytes, over the {max_bytes}-byte limit "
            "(raise --max-descriptor-size if it is genuine)",
            file=name,
        )
    if _DOCTYPE.search(_prolog(data)):
        # Refuse before parsing: no DTD is ever legitimate in an OVF, and a
        # DOCTYPE is how entity-expansion and external-entity attacks start.
        raise PackageError("DOCTYPE/DTD declarations are not allowed in a descriptor", file=name)
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        root = _tolerate_bad_namespace_uris(data, exc)
        if root is None:
            raise PackageError(f"not well-formed XML: {exc.msg}", file=name) from exc
    except ValueError as exc:  # e.g. encoding declarations lxml refuses
        raise PackageError(f"unreadable XML: {exc}", file=name) from exc
    tree = root.getroottree()
    if tree.docinfo.internalDTD is not None or tree.docinfo.doctype:
        # A DOCTYPE in an OVF is never legitimate; it is how entity attacks start.
        raise PackageError("DOCTYPE/DTD declarations are not allowed in a descriptor", file=name)
    return root


__all__ = ["DEFAULT_MAX_DESCRIPTOR_BYTES", "parse_xml"]
