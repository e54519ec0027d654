"""The OVF environment document a guest reads at boot (DSP0243 section 11). Pure.

vCenter hands it to a powered-on vApp through VMware Tools as
``guestinfo.ovfEnv`` when the VM's vApp options say so; a VM imported without
them (``govc import.ova -options`` with ``InjectOvfEnv``, ovftool's
``--X:injectOvfEnv``) gets the document written into that extraConfig key
instead, which is what :func:`ovf_environment` builds: a ``PlatformSection``
(the vCenter that deployed it) and a ``PropertySection`` with every property's
value — what the job set, else the descriptor's default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from xml.sax.saxutils import escape

from asyncovf.ovf.descriptor import Descriptor

ENVIRONMENT_NS: Final = "http://schemas.dmtf.org/ovf/environment/1"
VMWARE_ENVIRONMENT_NS: Final = "http://www.vmware.com/schema/ovfenv"
XSI_NS: Final = "http://www.w3.org/2001/XMLSchema-instance"
#: The extraConfig key VMware Tools serves the document under (``vmtoolsd --cmd
#: "info-get guestinfo.ovfEnv"``).
GUESTINFO_KEY: Final = "guestinfo.ovfEnv"

# Attribute values keep their whitespace only as character references.
_ATTRIBUTE_ENTITIES: Final = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


@dataclass(frozen=True)
class Platform:
    """The ``PlatformSection``: who deployed the VM (vCenter's ``about``)."""

    kind: str
    version: str
    vendor: str
    locale: str = "en"


def environment_properties(descriptor: Descriptor, deployment: str | None,
                           values: Mapping[str, str]) -> dict[str, str]:
    """Every property of ``deployment`` with its value: ``values`` first, else the default.

    Keys are the full ``class.key.instance`` keys, as in CreateImportSpec's
    ``propertyMapping``; properties without a default or a value get ``""``.
    """
    chosen = deployment or descriptor.default_deployment
    result: dict[str, str] = {}
    for prop in descriptor.properties:
        if prop.applies_to(chosen) and prop.key not in result:
            result[prop.key] = prop.default_for(chosen) or ""
    result.update(values)
    return result


def ovf_environment(properties: Mapping[str, str], *, esx_id: str, platform: Platform) -> str:
    """The ``Environment`` document for ``guestinfo.ovfEnv``; ``esx_id`` is the VM's moid."""

    def attr(value: str) -> str:
        return escape(value, _ATTRIBUTE_ENTITIES)

    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<Environment",
        f'     xmlns="{ENVIRONMENT_NS}"',
        f'     xmlns:xsi="{XSI_NS}"',
        f'     xmlns:oe="{ENVIRONMENT_NS}"',
        f'     xmlns:ve="{VMWARE_ENVIRONMENT_NS}"',
        '     oe:id=""',
        f'     ve:esxId="{attr(esx_id)}">',
        "   <PlatformSection>",
        f"      <Kind>{escape(platform.kind)}</Kind>",
        f"      <Version>{escape(platform.version)}</Version>",
        f"      <Vendor>{escape(platform.vendor)}</Vendor>",
        f"      <Locale>{escape(platform.locale)}</Locale>",
        "   </PlatformSection>",
        "   <PropertySection>",
        *(f'      <Property oe:key="{attr(key)}" oe:value="{attr(value)}"/>'
          for key, value in properties.items()),
        "   </PropertySection>",
        "</Environment>",
    ]
    return "\n".join(lines) + "\n"


__all__ = ["GUESTINFO_KEY", "Platform", "environment_properties", "ovf_environment"]
