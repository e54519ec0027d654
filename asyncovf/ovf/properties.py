"""vApp property values checked against the descriptor before anything is imported.

vCenter checks property values too — but only at CreateImportSpec time, one
VM at a time, with messages that do not always name the property. We check
every job's ``PropertyMapping`` up front against the ProductSection: the key
exists, the value has the declared type (DSP0243 9.5.1: ``uint8`` …
``sint64``, ``real32``/``real64``, ``boolean``, ``string``, ``password``,
``ip``, ``ip:network``) and satisfies the qualifiers (DSP0243 9.5.2:
``MinLen(n)``, ``MaxLen(n)``, ``MinValue(n)``, ``MaxValue(n)``,
``ValueMap{"a","b"}``). Every error names the property and what it expected.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Final

from asyncovf.errors import PropertyError
from asyncovf.ovf.descriptor import Descriptor, ProductProperty

_INT_RANGES: Final = {
    f"{sign}int{bits}": ((-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if sign == "s"
                         else (0, 2**bits - 1))
    for sign in ("u", "s") for bits in (8, 16, 32, 64)
}
_NUMERIC: Final = frozenset(_INT_RANGES) | {"real32", "real64"}
_BOOLEANS: Final = {"true", "false", "1", "0"}
_QUALIFIER: Final = re.compile(r"(\w+)\s*(\(([^)]*)\)|\{([^}]*)\})")


def check_properties(descriptor: Descriptor, values: Mapping[str, str], *,
                     where: str = "", hidden: bool = False) -> None:
    """Raise :class:`~asyncovf.errors.PropertyError` for the first value the descriptor forbids.

    A property the vendor did not mark ``userConfigurable`` is refused unless
    ``hidden`` (govc's ``-hidden``): vCenter would silently keep the default.
    """
    if not values:
        return
    declared = {prop.key: prop for prop in descriptor.entity.properties}
    for system in descriptor.entity.walk():
        declared.update((prop.key, prop) for prop in system.properties)
    prefix = f"{where}: " if where else ""
    for key, value in values.items():
        prop = declared.get(key)
        if prop is None:
            known = ", ".join(sorted(declared)) or "none"
            raise PropertyError(f"{prefix}property {key!r} is not in the descriptor "
                                f"(its properties: {known})")
        if not prop.user_configurable and not hidden:
            raise PropertyError(f"{prefix}property {key!r} is not user-configurable; set "
                                "hidden (--hidden) to set it anyway")
        problem = _problem(prop, str(value))
        if problem:
            raise PropertyError(f"{prefix}property {key!r} = {_shown(prop, value)}: {problem}")


def _shown(prop: ProductProperty, value: str) -> str:
    return "(hidden)" if prop.password or prop.type == "password" else repr(value)


def _problem(prop: ProductProperty, value: str) -> str | None:
    kind = (prop.type or "string").strip()
    if kind in _INT_RANGES:
        try:
            number = int(value)
        except ValueError:
            return f"expected an integer ({kind})"
        low, high = _INT_RANGES[kind]
        if not low <= number <= high:
            return f"out of range for {kind} ({low}..{high})"
    elif kind in ("real32", "real64"):
        try:
            float(value)
        except ValueError:
            return f"expected a number ({kind})"
    elif kind == "boolean":
        if value.lower() not in _BOOLEANS:
            return "expected true or false"
    elif kind in ("ip", "ip:network"):
        problem = _ip_problem(kind, value)
        if problem:
            return problem
    return _qualifier_problem(prop.qualifiers or "", kind, value)


def _ip_problem(kind: str, value: str) -> str | None:
    if value == "":
        return None  # left empty: filled in by vCenter's IP allocation
    try:
        if kind == "ip":
            ipaddress.ip_address(value)
        else:
            ipaddress.ip_network(value, strict=False)
    except ValueError:
        return f"expected an {'IP address' if kind == 'ip' else 'IP network'}"
    return None


def _qualifier_problem(qualifiers: str, kind: str, value: str) -> str | None:
    for name, _, arguments, choices in _QUALIFIER.findall(qualifiers):
        if name == "ValueMap" and choices:
            allowed = [c.strip().strip('"') for c in choices.split(",")]
            if value not in allowed:
                return f"must be one of {', '.join(allowed)} (ValueMap)"
        elif name in ("MinLen", "MaxLen") and arguments.strip().isascii() \
                and arguments.strip().isdigit():
            length = int(arguments)
            if name == "MinLen" and len(value) < length:
                return f"shorter than MinLen({length})"
            if name == "MaxLen" and len(value) > length:
                return f"longer than MaxLen({length})"
        elif name in ("MinValue", "MaxValue") and kind in _NUMERIC:
            try:
                limit, number = float(arguments), float(value)
            except ValueError:
                continue
            if name == "MinValue" and number < limit:
                return f"below MinValue({arguments.strip()})"
            if name == "MaxValue" and number > limit:
                return f"above MaxValue({arguments.strip()})"
    return None


__all__ = ["check_properties"]
