"""Request templates: a SOAP request serialized once, its varying strings filled in as text.

pyVmomi serializes a request by walking its objects, checking each field's
type and version as it goes: for ImportVApp's spec that walk is a third of a
millisecond, the largest serialization of an import. A batch sends the same
shape again and again — the group's spec with only the VM's name, its paths
and its property values changed — so it can be walked once: serialized with a
sentinel in place of each string that varies, cut at the sentinels, and each
later request made by joining the pieces with that request's strings.

Why the text is the same as pyVmomi's: a string field serializes as
``<tag attrs>XmlEscape(value)</tag>`` whatever the value (the field's type
decides the tag and attributes, not the value), so two objects that differ
only in string values of string fields serialize to the same text around
those values. The caller keeps that promise (its slots are ``str`` fields, set
to ``str`` values); :meth:`RequestTemplate.build` checks every sentinel came
out once and unchanged, and the caller checks the first fill against pyVmomi's
own serialization before it keeps a template.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Final

from pyVmomi.SoapAdapter import XmlEscape

log = logging.getLogger(__name__)

#: Private-use characters: XmlEscape leaves them as they are, and neither
#: vCenter nor a descriptor puts them in a spec (a spec that held one would
#: only fail :meth:`RequestTemplate.build`'s count and go without a template).
_OPEN: Final = "\ue000"
_CLOSE: Final = "\ue001"
_SENTINEL: Final = re.compile(f"{_OPEN}([0-9]+){_CLOSE}")


def sentinel(index: int) -> str:
    """The string set in slot ``index`` of the object a template is built from."""
    return f"{_OPEN}{index}{_CLOSE}"


@dataclass(frozen=True)
class RequestTemplate:
    """A serialized request cut at its slots: ``pieces[0] v[order[0]] pieces[1] …``."""

    pieces: tuple[str, ...]
    order: tuple[int, ...]
    #: Escape values as pyVmomi escapes strings; a managed object's id it writes as is.
    escape: bool = True

    @classmethod
    def build(cls, body: bytes, slots: int, *, escape: bool = True) -> RequestTemplate | None:
        """Cut ``body`` (serialized with :func:`sentinel` ``(i)`` in slot ``i``, for
        ``i < slots``) at its sentinels; ``None`` unless each came out exactly once."""
        parts = _SENTINEL.split(body.decode("utf-8"))
        order = tuple(int(index) for index in parts[1::2])
        if sorted(order) != list(range(slots)):
            return None
        pieces = tuple(parts[0::2])
        if any(_OPEN in piece or _CLOSE in piece for piece in pieces):
            return None
        return cls(pieces, order, escape)

    def fill(self, values: Sequence[str]) -> bytes:
        """The request with ``values[i]`` in slot ``i``, as pyVmomi would have written it."""
        out = [self.pieces[0]]
        for index, piece in zip(self.order, self.pieces[1:], strict=True):
            out.append(XmlEscape(values[index]) if self.escape else values[index])
            out.append(piece)
        return "".join(out).encode("utf-8")


class RequestTemplates:
    """Templates by request shape, each built once and kept only if it reproduces pyVmomi.

    What every caller of :class:`RequestTemplate` does: the first request of a
    shape is pyVmomi's own text; the shape's template is built from a probe
    (the same request with :func:`sentinel` ``(i)`` in slot ``i``) and kept
    only when filling it with the first request's values gives that text back
    byte for byte. A shape whose template failed goes through pyVmomi always.
    """

    def __init__(self, *, escape: bool = True) -> None:
        self.escape = escape
        self._by_shape: dict[Hashable, RequestTemplate | None] = {}

    def request(self, shape: Hashable, values: Sequence[str], serialize: Callable[[], bytes],
                serialize_probe: Callable[[], bytes]) -> bytes:
        """The request of ``shape`` with ``values`` in its slots, as pyVmomi writes it.

        ``serialize`` is pyVmomi writing this request; ``serialize_probe`` writing
        the shape's probe (called once per shape, with the first request).
        """
        if shape in self._by_shape:
            template = self._by_shape[shape]
            return template.fill(values) if template is not None else serialize()
        body = serialize()
        template = RequestTemplate.build(serialize_probe(), len(values), escape=self.escape)
        if template is not None and template.fill(values) != body:
            log.warning("a request template differs from pyVmomi's text; not used")
            template = None
        self._by_shape[shape] = template
        return body


__all__ = ["RequestTemplate", "RequestTemplates", "sentinel"]
