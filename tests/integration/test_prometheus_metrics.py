"""``--metrics-port`` scraped by a real Prometheus during a run against the simulator.

What Prometheus stored is read back through its HTTP API and held against the
run's report and the simulator's own counters. The counters are read with
``max_over_time``/``last_over_time``: once the process exits, its series go
stale and an instant query alone would find nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.faults.support import FaultRun, run_cli_report, write_batch
from tests.prometheus import Prometheus, free_port, running_prometheus

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

COUNT = 12
WORKERS = 3


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def prometheus(tmp_path: Path, metrics_port: int) -> Iterator[Prometheus]:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    with running_prometheus(directory, f"127.0.0.1:{metrics_port}") as server:
        yield server


def by_label(results: dict[tuple[tuple[str, str], ...], float], label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for labels, value in results.items()}


async def test_prometheus_scrapes_a_run_whose_counters_agree_with_its_report(
        fault_run: FaultRun, tmp_path: Path, prometheus: Prometheus, metrics_port: int) -> None:
    # Uploads of about a second each: the run lasts a few scrapes.
    await fault_run.set_faults(nfc={"throttle_bps": 300_000})
    batch = await write_batch(fault_run, tmp_path, f'  - name: "{fault_run.prefix}-{{index}}"\n'
                                                   f"    count: {COUNT}\n")
    status, _, stderr, report = await run_cli_report(
        fault_run, batch, "--concurrency", str(WORKERS),
        "--metrics-port", f"127.0.0.1:{metrics_port}", "--metrics-linger", "2")
    assert status == 0, stderr
    assert f"asyncovf: metrics at http://127.0.0.1:{metrics_port}/metrics" in stderr
    counters = await fault_run.settled()
    totals = report["totals"]

    def over_run(expression: str, how: str = "max_over_time") -> str:
        return f"{how}({expression}[10m])"

    async def query(expression: str) -> dict[tuple[tuple[str, str], ...], float]:
        return await anyio.to_thread.run_sync(prometheus.query, expression)

    async def value(expression: str) -> float:
        return await anyio.to_thread.run_sync(prometheus.value, expression)

    (target,) = await anyio.to_thread.run_sync(prometheus.targets)
    assert target["scrapeUrl"] == f"http://127.0.0.1:{metrics_port}/metrics"

    # Jobs by how they ended: the report's totals.
    ended = by_label(await query(over_run("asyncovf_imports_total")), "status")
    assert ended == {"imported": totals["imported"], "skipped": 0, "failed": 0, "aborted": 0}
    assert totals["imported"] == COUNT
    # SOAP calls by method: every call the simulator counted, the placement check's
    # session included (the report's totals count the workers' sessions).
    calls = by_label(await query(
        f"sum by (method) ({over_run('asyncovf_soap_calls_total')})"), "method")
    assert calls == {method: counters.calls(method) for method in counters.methods
                     if counters.calls(method)}
    assert calls["ImportVApp"] == totals["soap_calls"]["ImportVApp"] == COUNT
    assert calls["Login"] == totals["soap_calls"]["Login"] + 1
    latencies = by_label(await query(over_run("asyncovf_soap_call_seconds_count")), "method")
    assert latencies == calls
    assert await value(over_run("asyncovf_uploaded_bytes_total")) == totals["bytes"]
    phases = by_label(await query(over_run("asyncovf_phase_seconds_count")), "phase")
    assert {phases[p] for p in ("spec", "import", "lease_wait", "upload", "complete")} == {COUNT}
    # Scraped while the run ran: sessions and the limit were up; once over, nothing is held.
    assert await value(over_run("asyncovf_concurrency_limit")) == WORKERS
    for gauge in ("asyncovf_sessions_open", "asyncovf_imports_in_flight"):
        assert await value(over_run(gauge)) == WORKERS, gauge
    assert 1 <= await value(over_run("asyncovf_leases_open")) <= WORKERS
    for gauge in ("asyncovf_sessions_open", "asyncovf_leases_open", "asyncovf_imports_in_flight"):
        assert await value(over_run(gauge, "last_over_time")) == 0, gauge
    await fault_run.check_invariants(imported={job["name"] for job in report["jobs"]})
