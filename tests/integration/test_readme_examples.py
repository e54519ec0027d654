"""The README's library examples run as written, against the simulator.

Each python block of "The same as a library" runs as a script in a fresh
interpreter, the way a reader would run it: credentials from ``VSPHERE_*``,
the simulator's CA through ``SSL_CERT_FILE`` (trusted like a system CA), the
package and batch file in the working directory under the names the examples
use. Only the placement and the VM name are replaced, to the simulator's and
this test's own. Each must import its VMs and leave no session, lease or
other VM behind.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import anyio
import pytest

from tests.faults.support import FaultRun, make_package
from tests.integration.inspect import list_vms
from tests.unit.test_public_api import library_section

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
ROOT = Path(__file__).resolve().parents[2]  # the examples use this tree's asyncovf


def examples() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", library_section(), flags=re.DOTALL)
    assert len(blocks) == 2, "the section has one example for an import, one for a batch"
    return blocks


def replaced(code: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert code.count(old) == 1, f"the example no longer has {old} once"
        code = code.replace(old, new)
    return code


@pytest.fixture
async def run(fault_run: FaultRun, tmp_path: Path) -> FaultRun:
    """The test's simulator, with ``photon.ova`` in a working directory of its own."""
    work = tmp_path / "work"
    await anyio.Path(work).mkdir()
    await anyio.to_thread.run_sync(make_package, work, "photon")
    fault_run.sessions_live_before = (await fault_run.counters()).sessions_live
    return fault_run


def workdir(run: FaultRun) -> Path:
    return run.package_path.parent / "work"


async def run_example(run: FaultRun, code: str) -> str:
    """``code`` as a script in the working directory; its output, once it exited 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSPHERE_")}
    env.update(VSPHERE_SERVER=run.vcsim.url, VSPHERE_USER=run.vcsim.username,
               VSPHERE_PASSWORD=run.vcsim.password, SSL_CERT_FILE=str(run.vcsim.ca_file),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    result = await anyio.run_process([sys.executable, "-c", code], env=env,
                                     cwd=workdir(run), check=False)
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, f"{stdout}\n{stderr}"
    return stdout


async def test_the_single_import_example_imports_its_vm(run: FaultRun) -> None:
    name = f"{run.prefix}-web"
    code = replaced(examples()[0], {'"Cluster01"': '"DC0_C0"',
                                    '"vsanDatastore"': '"LocalDS_0"',
                                    '"web-001"': f'"{name}"'})

    stdout = await run_example(run, code)

    (vm,) = [vm for vm in await list_vms(run.connection) if vm.name == name]
    assert stdout == f"{name}: imported as {vm.moid}\n"
    await run.check_invariants(imported={name})


async def test_the_batch_example_imports_every_vm(run: FaultRun) -> None:
    await anyio.Path(workdir(run) / "fleet.yaml").write_text(
        "defaults:\n  source: ./photon.ova\n  cluster: DC0_C0\n  datastore: LocalDS_0\n"
        f'vms:\n  - name: "{run.prefix}-{{index}}"\n    count: 3\n')

    stdout = await run_example(run, examples()[1])

    names = {f"{run.prefix}-{i}" for i in (1, 2, 3)}
    lines = [line.split() for line in stdout.splitlines()]
    assert sorted(lines) == sorted([name, "imported"] for name in names)
    await run.check_invariants(imported=names)
