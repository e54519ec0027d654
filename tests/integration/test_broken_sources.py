"""A hostile OVA in a batch fails its own VMs, in one line; the other source imports.

Its tar header says its manifest is −5 bytes long (a GNU base-256 number),
which once reached a ``read(-5)`` and a bare ValueError: ``asyncovf run`` died
with a traceback and imported nothing. Now the source is refused like any
broken one, before the run, and nothing of it reaches vCenter.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.factory import ovf_descriptor
from tests.faults.support import FaultRun, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def write_broken_ova(path: Path) -> int:
    """``broken.ova``: a descriptor, then a manifest header of size −5; its offset."""
    descriptor = ovf_descriptor("broken", [("broken-disk1.vmdk", 4, 16)]).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, content in (("broken.ovf", descriptor), ("broken.mf", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    data = bytearray(buffer.getvalue())
    header = 512 + len(descriptor) + -len(descriptor) % 512
    data[header + 124:header + 136] = b"\xff" + (256**11 - 5).to_bytes(11, "big")
    data[header + 148:header + 156] = b" " * 8
    data[header + 148:header + 156] = b"%06o\0 " % sum(data[header:header + 512])
    path.write_bytes(bytes(data) + bytes(1024 * 1024))
    return header


async def test_a_negative_tar_size_fails_that_sources_vms_and_the_others_import(
    fault_run: FaultRun, tmp_path: Path
) -> None:
    # The fixture wrote tmp_path/appliance.ova, the good source.
    header = await anyio.to_thread.run_sync(write_broken_ova, tmp_path / "broken.ova")
    prefix = fault_run.prefix
    batch = tmp_path / "fleet.yaml"
    await anyio.Path(batch).write_text(
        "defaults:\n  source: ./appliance.ova\n  cluster: DC0_C0\n  datastore: LocalDS_0\n"
        f'vms:\n  - name: "{prefix}-good{{index}}"\n    count: 2\n'
        f'  - name: "{prefix}-bad{{index}}"\n    count: 2\n    source: ./broken.ova\n')
    report_path = tmp_path / "report.json"
    status, stdout, stderr = await run_cli(fault_run, batch, "--concurrency", "2",
                                           "--report", str(report_path))

    error = f"{tmp_path}/broken.ova: member 'broken.mf' (header at offset {header}): " \
            "negative size -5"
    assert status == 1, stderr  # a refused source beside VMs that were imported
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert lines[0] == f"asyncovf: error: {error} (affects {prefix}-bad1, {prefix}-bad2)"
    report: dict[str, Any] = json.loads(await anyio.Path(report_path).read_text())
    jobs = {job["name"]: job for job in report["jobs"]}
    good = {f"{prefix}-good1", f"{prefix}-good2"}
    assert {name for name, job in jobs.items() if job["status"] == "imported"} == good
    for name in (f"{prefix}-bad1", f"{prefix}-bad2"):
        bad = jobs[name]
        assert (bad["status"], bad["vm"], bad["attempts"], bad["error"]) == \
            ("failed", None, 0, error), bad
    assert report["totals"]["failed"] == 2 and report["totals"]["imported"] == 2
    assert any(line.startswith(f"{prefix}-bad1") and " failed " in line
               for line in stdout.splitlines())
    counters = await fault_run.settled()
    assert counters.ok("ImportVApp") == 2 == counters.ok("HttpNfcLeaseComplete")
    await fault_run.check_invariants(imported=good)
