"""A real Prometheus server for tests: Debian's ``prometheus``, scraping one target.

It starts with a fresh storage directory, scrapes the target every
:data:`SCRAPE_INTERVAL`, and is read through its HTTP API, as an operator's
dashboards read it. Standard library only, like the simulator's harness.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

#: Often enough that a run of a second is scraped while it runs.
SCRAPE_INTERVAL: Final = "250ms"


class PrometheusUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]

    def query(self, expression: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query: each series' labels (sorted, without ``__name__``) → its value."""
        answer = self._get("/api/v1/query", query=expression)
        return {tuple(sorted((k, v) for k, v in item["metric"].items() if k != "__name__")):
                float(item["value"][1]) for item in answer["result"]}

    def value(self, expression: str) -> float:
        """The one value of ``expression``; fails unless there is exactly one series."""
        results = self.query(expression)
        assert len(results) == 1, f"{expression}: {results}"
        return next(iter(results.values()))

    def targets(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/targets")["activeTargets"])

    def _get(self, path: str, **params: str) -> dict[str, Any]:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            document = json.load(response)
        assert document["status"] == "success", document
        return dict(document["data"])


@contextlib.contextmanager
def running_prometheus(directory: Path, target: str, *, interval: str = SCRAPE_INTERVAL,
                       startup_timeout: float = 30.0) -> Iterator[Prometheus]:
    """Prometheus scraping ``target`` (``host:port``) every ``interval``, its files in
    ``directory``."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise PrometheusUnavailable("prometheus not found: apt-get install prometheus "
                                    "(make test does this when run as root)")
    config = directory / "prometheus.yml"
    config.write_text(
        "global:\n"
        f"  scrape_interval: {interval}\n"
        f"  scrape_timeout: {interval}\n"
        "scrape_configs:\n"
        "  - job_name: asyncovf\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n")
    address = f"127.0.0.1:{free_port()}"
    log = (directory / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
         f"--web.listen-address={address}", "--log.level=warn"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    server = Prometheus(url=f"http://{address}", process=process)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise PrometheusUnavailable(
                    f"prometheus exited with {process.returncode}: "
                    f"{(directory / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise PrometheusUnavailable("prometheus did not become ready")
            time.sleep(0.1)
        # Its scrape manager takes up new targets every 5 s: the first is known by then.
        while not server.targets():
            if time.monotonic() > deadline:
                raise PrometheusUnavailable(f"prometheus did not take up {target}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


__all__ = ["SCRAPE_INTERVAL", "Prometheus", "PrometheusUnavailable", "free_port",
           "running_prometheus"]
