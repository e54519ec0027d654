"""error_kind: the category a load-test report counts failures by."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from asyncovf.errors import (
    ImportSpecRejected,
    LeaseError,
    ManifestError,
    PlacementError,
    RequestTimeout,
    SourceError,
    TLSVerificationError,
    TransferError,
    TransferTimeout,
    TransportError,
    UntrustedTarget,
    VCenterError,
    error_kind,
)


@pytest.mark.parametrize(("error", "kind"), [
    (VCenterError("x", fault=vim.fault.InvalidState()), "InvalidState"),
    (VCenterError("x", fault=vim.fault.TaskInProgress()), "TaskInProgress"),
    (VCenterError("x"), "vCenter"),
    (LeaseError("x", fault=vim.fault.FileFault()), "lease: FileFault"),
    (LeaseError("x"), "lease"),
    (ImportSpecRejected("x", fault=vim.fault.OvfImport()), "OvfImport"),
    (ManifestError("digest mismatch"), "manifest"),
    (PlacementError("no such datastore"), "input"),
    (SourceError("reset"), "source"),
    (UntrustedTarget("foreign host"), "untrusted target"),
    (TransferTimeout("stalled"), "upload stalled"),
    (TransferError("HTTP 500"), "upload"),
    (RequestTimeout("late"), "timeout"),
    (TimeoutError(), "timeout"),
    (TLSVerificationError("bad cert"), "TLS"),
    (TransportError("refused"), "connection"),
    (ConnectionResetError(), "connection"),
    (ValueError("bug"), "ValueError"),
])
def test_each_error_has_its_kind(error: BaseException, kind: str) -> None:
    assert error_kind(error) == kind


@pytest.mark.anyio
async def test_a_group_is_counted_by_its_first_real_error() -> None:
    group = BaseExceptionGroup("upload", [TransferError("HTTP 500"), RequestTimeout("late")])
    assert error_kind(group) == "upload"
