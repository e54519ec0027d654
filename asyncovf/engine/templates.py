"""Name, annotation and property templates of a batch file: ``web-{index:03d}``.

``str.format`` limited to the fields a template may name (``{index}``,
``{name}``), with no attribute or item access, and bounded: a format width or
precision over :data:`MAX_FORMAT_WIDTH` is refused before anything is
formatted (``{index:>1000000000}`` would otherwise build a gigabyte), and so
is a result longer than :data:`MAX_RENDERED`.
"""

from __future__ import annotations

import re
import string
from typing import Any, Final

#: Width and precision in a template's format spec, as in ``{index:03d}``.
MAX_FORMAT_WIDTH: Final = 64
#: Characters in a rendered name, annotation or property value.
MAX_RENDERED: Final = 64 * 1024


class _Template(string.Formatter):
    """``str.format`` limited to plain named fields: no attribute or item access."""

    def __init__(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if field_name not in self.allowed:
            raise KeyError(field_name)
        return super().get_field(field_name, args, kwargs)


def render(template: str, **values: Any) -> str:
    """Render a name or property template; raise ValueError with a usable message.

    Width and precision are capped before formatting, and so is the rendered length.
    """
    shown = repr(template[:60]) + ("…" if len(template) > 60 else "")
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad template {shown}: {exc}") from None
    for _, field_name, spec, _ in fields:
        if field_name is not None and spec:
            _check_format_spec(field_name, spec)
    try:
        text = _Template(frozenset(values)).format(template, **values)
    except KeyError as exc:
        raise ValueError(f"unknown placeholder {{{exc.args[0]}}} (use {{index}} or "
                         "{name})") from None
    except (ValueError, IndexError) as exc:
        raise ValueError(f"bad template {shown}: {exc}") from None
    if len(text) > MAX_RENDERED:
        raise ValueError(f"renders to {len(text)} characters, over the limit of "
                         f"{MAX_RENDERED}")
    return text


def _check_format_spec(field_name: str, spec: str) -> None:
    shown = f"{{{field_name}:{spec[:20]}{'…' if len(spec) > 20 else ''}}}"
    if "{" in spec:
        raise ValueError(f"{shown}: a format spec cannot hold a placeholder")
    # The fill is one character; the only other numbers are width and precision.
    fill = 1 if len(spec) > 1 and spec[1] in "<>=^" else 0
    for digits in re.findall(r"\d+", spec[fill:]):
        number = digits.lstrip("0") or "0"
        if len(number) > 3 or int(number) > MAX_FORMAT_WIDTH:
            raise ValueError(f"format width or precision in {shown} is over the limit "
                             f"of {MAX_FORMAT_WIDTH}")


def has_placeholder(template: str) -> bool:
    """Whether ``template`` names a field (a broken one counts: render() says why)."""
    try:
        return any(name is not None for _, name, _, _ in string.Formatter().parse(template))
    except ValueError:
        return True


__all__ = ["MAX_FORMAT_WIDTH", "MAX_RENDERED", "has_placeholder", "render"]
