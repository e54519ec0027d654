"""A batch's workers share one TLS context, built once and never on the event loop.

Each worker logs in with its own session; before, each login built a context
with ``ssl.create_default_context`` (it reads the CA files) on the event loop,
stalling every other worker's uploads meanwhile. Pinned uploads (leases that
give an ``sslThumbprint``) build their context off the loop too.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from typing import Any

import pytest

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.options import RunSettings
from asyncovf.vsphere import nfc, soap
from tests.faults.support import FaultRun, run_batch

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

WORKERS = 4


async def test_a_batchs_workers_share_one_context_built_off_the_loop(
    fault_run: FaultRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fault_run.set_faults(lease={"thumbprint": "match"})  # every upload pinned
    await fault_run.package()
    verifying: list[int] = []  # threads that built a context, by kind
    pinning: list[int] = []

    def counted(build: Callable[..., ssl.SSLContext],
                threads: list[int]) -> Callable[..., ssl.SSLContext]:
        def wrapper(*args: Any, **kwargs: Any) -> ssl.SSLContext:
            threads.append(threading.get_ident())
            return build(*args, **kwargs)
        return wrapper

    with monkeypatch.context() as patch:  # only while the batch runs
        patch.setattr(ssl, "create_default_context",
                      counted(ssl.create_default_context, verifying))
        build_pinning = counted(soap.build_pinning_context, pinning)
        patch.setattr(soap, "build_pinning_context", build_pinning)
        patch.setattr(nfc, "build_pinning_context", build_pinning)
        runner = await run_batch(fault_run, count=WORKERS * 2,
                                 settings=RunSettings(concurrency=WORKERS))

    assert [r.status for r in runner.results] == [JobStatus.IMPORTED] * WORKERS * 2
    assert runner.sessions_opened == WORKERS
    assert len(verifying) == 1, "each session built its own context"
    loop = threading.get_ident()
    assert loop not in verifying and verifying, "built on the event loop"
    assert pinning and loop not in pinning, "built on the event loop"
    await fault_run.check_invariants(runner)
