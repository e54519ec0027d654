"""Reading an OVF envelope's elements, whatever its OVF version or schema form.

OVF 1.x and 2.x put the envelope in different namespaces, the OVF 1.0 schema
allows ``<Section xsi:type=…>`` for any section, and some exporters leave the
``ovf:`` prefix off attributes or children. :class:`EnvelopeReader` hides all
of that behind a few accessors, so the descriptor's parser (``descriptor.py``)
and the virtual hardware section's parser (``hardware.py``) read elements the
same way without importing each other.
"""

from __future__ import annotations

from typing import Final

from lxml import etree

from asyncovf.errors import PackageError

OVF_NAMESPACES: Final = {
    "http://schemas.dmtf.org/ovf/envelope/1": "1.x",
    "http://schemas.dmtf.org/ovf/envelope/2": "2.x",
}
_XSI_TYPE: Final = "{http://www.w3.org/2001/XMLSchema-instance}type"


class EnvelopeReader:
    """Namespace-aware accessors for one descriptor; holds no state beyond its names."""

    def __init__(self, root: etree._Element, name: str) -> None:
        self.name = name
        qname = etree.QName(root)
        if qname.namespace == "http://www.vmware.com/schema/ovf/1/envelope":
            raise PackageError("OVF 0.9 (VMware's pre-standard format) is not supported; "
                               "convert it to OVF 1.0 or later with ovftool", file=name)
        if qname.localname != "Envelope" or qname.namespace not in OVF_NAMESPACES:
            raise PackageError(
                f"not an OVF descriptor: root element is <{qname.localname}> in "
                f"namespace {qname.namespace or '(none)'}",
                file=name,
            )
        self.ns = qname.namespace
        self.version = OVF_NAMESPACES[qname.namespace]
        self.root = root

    def tag(self, local: str) -> str:
        return f"{{{self.ns}}}{local}"

    def kind(self, element: etree._Element) -> str:
        """What a child element is, also in the OVF 1.0 schema's substitution form.

        ``<Section xsi:type="ovf:DiskSection_Type">`` is a DiskSection and
        ``<Content xsi:type="ovf:VirtualSystem_Type">`` a VirtualSystem: early
        vCenter exports (and ovftool) write them so.
        """
        if not isinstance(element.tag, str):
            return ""
        local = etree.QName(element).localname
        if local in ("Section", "Content"):
            declared = element.get(_XSI_TYPE)
            if declared:
                return declared.rsplit(":", 1)[-1].removesuffix("_Type")
        return local

    def sections(self, element: etree._Element, kind: str) -> list[etree._Element]:
        return [child for child in element if self.kind(child) == kind]

    def attr(self, element: etree._Element, local: str) -> str | None:
        value = element.get(f"{{{self.ns}}}{local}")
        if value is None:
            value = element.get(local)  # some tools omit the ovf: prefix
        return value

    def children(self, element: etree._Element, local: str) -> list[etree._Element]:
        """Child elements named ``local`` in the OVF namespace — or in none, as some
        exporters write children of a prefixed ``ovf:Envelope`` without a prefix."""
        return [
            child for child in element
            if isinstance(child.tag, str)
            and etree.QName(child).localname == local
            and etree.QName(child).namespace in (self.ns, None)
        ]

    def child_text(self, element: etree._Element, local: str) -> str | None:
        found = next(iter(self.children(element, local)), None)
        return found.text.strip() if found is not None and found.text else None

    def int_attr(self, element: etree._Element, local: str, *, what: str) -> int | None:
        raw = self.attr(element, local)
        if raw is None or raw == "":
            return None
        try:
            value = int(raw)
        except ValueError:
            raise PackageError(f"{what}: {local}={raw!r} is not an integer",
                               file=self.name) from None
        if value < 0:
            raise PackageError(f"{what}: {local}={raw!r} is negative", file=self.name)
        return value


__all__ = ["OVF_NAMESPACES", "EnvelopeReader"]
