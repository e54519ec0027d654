"""``--wire-log DIR`` on a real run against the simulator: a file per session, every call
in it, and none of the secrets that went over the wire."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest

from tests.faults.support import FaultRun, import_cli, run_cli, write_batch

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_an_import_logs_each_sessions_calls_without_its_secrets(
    fault_run: FaultRun, tmp_path: Path,
) -> None:
    directory = tmp_path / "wire"
    name = f"{fault_run.prefix}-0"
    status, _, stderr = await import_cli(fault_run, "--name", name,
                                         "--wire-log", str(directory))
    assert status == 0, stderr
    counters = await fault_run.settled()
    files = sorted(await anyio.to_thread.run_sync(lambda: list(directory.iterdir())))
    # One file per session (one import: one session).
    assert len(files) == counters.ok("Login") == counters.ok("Logout") == 1
    texts = [await anyio.Path(path).read_text() for path in files]
    logged = "\n".join(texts)
    calls = re.findall(r"^=== \S+ #\d+ (\w+) POST ", logged, re.M)
    assert sorted(calls) == sorted(
        method for method, count in counters.methods.items() for _ in range(count["calls"]))
    # Every call the simulator counted is in the log, and nothing else.
    assert {"Login", "ImportVApp", "HttpNfcLeaseComplete", "Logout"} <= set(calls)
    password = fault_run.vcsim.password
    assert password not in logged
    assert logged.count("<password") == 1 and "(redacted)</password>" in logged
    assert not re.search(r"vmware_soap_session=(?!\(redacted\))", logged)
    assert re.search(r"<LoginResponse.*<key>\(redacted\)</key>", logged, re.S)


async def test_a_run_writes_one_file_per_session(fault_run: FaultRun, tmp_path: Path) -> None:
    batch = await write_batch(fault_run, tmp_path, f'  - name: "{fault_run.prefix}-{{index}}"\n'
                                                   "    count: 4\n")
    directory = tmp_path / "wire"
    status, _, stderr = await run_cli(fault_run, batch, "--concurrency", "2",
                                      "--wire-log", str(directory))
    assert status == 0, stderr
    counters = await fault_run.settled()
    files = await anyio.to_thread.run_sync(lambda: list(directory.iterdir()))
    # The placement check's session, then each worker's.
    assert len(files) == counters.ok("Login") == 3
    logged = "".join([await anyio.Path(path).read_text() for path in files])
    assert len(re.findall(r"^=== \S+ #\d+ ImportVApp POST ", logged, re.M)) == 4
    await fault_run.check_invariants(imported={f"{fault_run.prefix}-{i}" for i in range(1, 5)})
