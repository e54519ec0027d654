"""``--metrics-port`` and ``OTEL_*`` on a bad day: a port taken, an exporter unknown,
Ctrl-C mid-run. Each is one line and leaves nothing behind."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import anyio
import pytest

from tests.faults.support import FaultRun, run_cli, signal_run, write_batch

pytestmark = [pytest.mark.faults, pytest.mark.anyio]


async def test_a_metrics_port_taken_is_one_line_and_exit_2_before_any_login(
        fault_run: FaultRun, tmp_path: Path) -> None:
    batch = await write_batch(fault_run, tmp_path, f'  - name: "{fault_run.prefix}-1"\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, _, stderr = await run_cli(fault_run, batch, "--metrics-port",
                                          f"127.0.0.1:{port}")
    assert status == 2, stderr
    assert stderr.splitlines() == [
        f"asyncovf: error: --metrics-port 127.0.0.1:{port}: Address already in use"]
    counters = await fault_run.settled()
    assert counters.calls("Login") == 0
    await fault_run.check_invariants(imported=set())


async def test_an_exporter_asyncovf_does_not_have_is_one_line_and_exit_2(
        fault_run: FaultRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = await write_batch(fault_run, tmp_path, f'  - name: "{fault_run.prefix}-1"\n')
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    # With metrics on: the port opened first is closed again, and nothing lingers.
    status, _, stderr = await run_cli(fault_run, batch, "--metrics-port", "127.0.0.1:0",
                                      "--metrics-linger", "600")
    assert status == 2, stderr
    assert stderr.splitlines()[-1] == ("asyncovf: error: OTEL_TRACES_EXPORTER=jaeger: asyncovf "
                                       "exports traces with one of otlp, console, none")
    counters = await fault_run.settled()
    assert counters.calls("Login") == 0
    await fault_run.check_invariants(imported=set())


async def test_sigint_mid_run_exits_at_once_instead_of_lingering_for_the_last_scrape(
        fault_run: FaultRun, tmp_path: Path) -> None:
    batch = await write_batch(fault_run, tmp_path, f'  - name: "{fault_run.prefix}-{{index}}"\n'
                                                   "    count: 6\n")
    await fault_run.set_faults(nfc=[{"throttle_bps": 100_000}])  # uploads crawl
    report = tmp_path / "report.json"
    # Lingering ten minutes after a Ctrl-C would outlive the test's own timeout.
    status, stderr = await signal_run(
        fault_run, batch, report, lambda counters: counters.ok("ImportVApp") >= 3,
        "--metrics-port", "127.0.0.1:0", "--metrics-linger", "600")
    assert status == 130, stderr
    assert "asyncovf: metrics at http://127.0.0.1:" in stderr
    assert "interrupted (SIGINT)" in stderr and "Traceback" not in stderr
    document = json.loads(await anyio.Path(report).read_text())
    imported = {job["name"] for job in document["jobs"] if job["status"] == "imported"}
    await fault_run.check_invariants(imported=imported)


async def test_a_collector_that_is_down_costs_the_run_one_line_not_its_imports(
        fault_run: FaultRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = await write_batch(fault_run, tmp_path, f'  - name: "{fault_run.prefix}-{{index}}"\n'
                                                   "    count: 3\n")
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    status, _, stderr = await run_cli(fault_run, batch, "--report", str(tmp_path / "r.json"))
    assert status == 0, stderr
    # The exporter's retries are not shown; the SDK's giving up is, once.
    told = [line for line in stderr.splitlines() if line.startswith("asyncovf:")]
    assert told == [
        "asyncovf: ERROR: Failed to export spans batch due to timeout, max retries or shutdown."]
    await fault_run.check_invariants(
        imported={f"{fault_run.prefix}-{index}" for index in range(1, 4)})
