"""Whether the ``OTEL_*`` environment asks for traces, and how to export them.

Apart from the tracing module so that a missing ``asyncovf[tracing]`` extra
can still be told apart from traces nobody asked for: asked for without the
extra is an error, not asked for costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from asyncovf.errors import UsageError
from asyncovf.printable import printable

#: ``OTEL_TRACES_EXPORTER`` values this tool understands.
EXPORTERS: Final = ("otlp", "console", "none")


def traces_exporter(environ: Mapping[str, str] | None = None) -> str | None:
    """``otlp`` or ``console`` when traces are asked for, else None.

    Asked means ``OTEL_TRACES_EXPORTER`` set to one of them, or an OTLP
    endpoint set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or its ``_TRACES_`` form).
    Unlike the SDK's own default (``otlp`` to localhost), nothing is exported
    unless asked. ``OTEL_SDK_DISABLED=true`` turns it off.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    wanted = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not wanted and (env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                       or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        wanted = "otlp"
    if wanted in ("", "none"):
        return None
    if wanted not in EXPORTERS:
        raise UsageError(f"OTEL_TRACES_EXPORTER={printable(wanted)}: asyncovf exports "
                         f"traces with one of {', '.join(EXPORTERS)}")
    return wanted


__all__ = ["EXPORTERS", "traces_exporter"]
