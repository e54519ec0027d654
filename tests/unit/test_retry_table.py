"""The one table of what is retryable (errors.retry_scopes), and every retry asking it.

The verdicts below are the ones the retry sites held on their own before the
table: the job's ``_retryable`` (engine/batch.py), the upload's
``is_transient_transfer`` (engine/uploads.py), and the session's
``retry_if_exception_type(TransportError)`` and ``except NotAuthenticatedError``
(vsphere/session.py). The one change: a cancellation or an interrupt is never
retryable, where the job's predicate would have said yes — it was never asked,
since the job lets a cancellation through before it asks.

Each site is then driven through its public behaviour with an error from the
table, twice: with the table as it is, and with the table's verdict at that
site's scope turned round in the site's own module. A site that decided with
a predicate of its own would pass the first and fail the second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import ModuleType, SimpleNamespace
from typing import Any

import anyio
import pytest
from pyVmomi import vim, vmodl

import asyncovf.errors
from asyncovf.engine import batch, uploads
from asyncovf.engine.batch import JobContext, JobResult, JobStatus, run_job
from asyncovf.engine.options import RunSettings
from asyncovf.engine.phases import JobState
from asyncovf.errors import (
    PERMANENT_FAULTS,
    IllegalTransition,
    ImportSpecRejected,
    InputError,
    InvalidLoginError,
    LeaseError,
    ManagedObjectNotFoundError,
    ManifestError,
    NameConflict,
    NotAuthenticatedError,
    PackageError,
    PlacementError,
    PostImportError,
    PropertyError,
    RequestTimeout,
    RetryScope,
    SourceError,
    TaskError,
    TLSVerificationError,
    TransferError,
    TransferTimeout,
    TransportError,
    UntrustedTarget,
    UsageError,
    VCenterError,
    WaitForIPTimeout,
    retry_scopes,
    retryable,
)
from asyncovf.vsphere import session as session_module
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.nfc import UploadTarget
from asyncovf.vsphere.session import RetryPolicy, VCenterSession

CALL, LOGIN, UPLOAD, JOB = RetryScope.CALL, RetryScope.LOGIN, RetryScope.UPLOAD, RetryScope.JOB
INVENTORY = RetryScope.INVENTORY
NEVER: frozenset[RetryScope] = frozenset()

ErrorFactory = Callable[[], BaseException]


def after(cause: BaseException) -> PostImportError:
    """A post-import step's failure, chained to ``cause`` as run_post_import raises it."""
    try:
        raise PostImportError(f"web: power_on failed: {cause}", step="power_on",
                              vm="web") from cause
    except PostImportError as error:
        return error


def fault(name: str) -> Any:
    """A pyVmomi fault of that short type name (vim.fault or vmodl.fault)."""
    return (getattr(vim.fault, name, None) or getattr(vmodl.fault, name))()


#: (what, a fresh error, the scopes at which a retry may cure it)
TABLE: list[tuple[str, ErrorFactory, frozenset[RetryScope]]] = [
    # The network between us and vCenter: the answer was lost, not refused.
    ("TransportError", lambda: TransportError("connection reset", host="vc"), {CALL, JOB}),
    ("RequestTimeout", lambda: RequestTimeout("no answer in 120 s", host="vc"), {CALL, JOB}),
    ("TLSVerificationError", lambda: TLSVerificationError("bad certificate"), {CALL, JOB}),
    # Uploads and package sources: connection trouble, stalls and 5xx; never a 4xx.
    ("TransferError", lambda: TransferError("dropped", file="d.vmdk"), {UPLOAD, JOB}),
    ("TransferError 500", lambda: TransferError("5xx", status=500), {UPLOAD, JOB}),
    ("TransferError 503", lambda: TransferError("5xx", status=503), {UPLOAD, JOB}),
    ("TransferError 404", lambda: TransferError("4xx", status=404), NEVER),
    ("TransferError 499", lambda: TransferError("4xx", status=499), NEVER),
    ("TransferTimeout", lambda: TransferTimeout("stalled", file="d.vmdk"), {UPLOAD, JOB}),
    ("TransferTimeout 404", lambda: TransferTimeout("stalled", status=404), {UPLOAD}),
    ("SourceError", lambda: SourceError("web server went away"), {UPLOAD, JOB}),
    ("SourceError 502", lambda: SourceError("bad gateway", status=502), {UPLOAD, JOB}),
    ("SourceError 404", lambda: SourceError("not found", status=404), NEVER),
    ("UntrustedTarget", lambda: UntrustedTarget("foreign host"), NEVER),
    ("UntrustedTarget 503", lambda: UntrustedTarget("foreign host", status=503), NEVER),
    # Our side: the same input fails the same way.
    ("ManifestError", lambda: ManifestError("digest mismatch", file="d.vmdk"), NEVER),
    ("PackageError", lambda: PackageError("broken", file="a.ova"), NEVER),
    ("InputError", lambda: InputError("bad"), NEVER),
    ("UsageError", lambda: UsageError("--server is required"), NEVER),
    ("PlacementError", lambda: PlacementError("no such pool"), NEVER),
    ("NameConflict", lambda: NameConflict("web exists", vm="web"), NEVER),
    ("PropertyError", lambda: PropertyError("port: not a uint16"), NEVER),
    ("ImportSpecRejected", lambda: ImportSpecRejected("no", fault=fault("InvalidState")),
     NEVER),
    # vCenter's side: retried as a job unless the fault is permanent.
    ("VCenterError", lambda: VCenterError("no fault object"), {JOB}),
    ("VCenterError InvalidState", lambda: VCenterError("x", fault=fault("InvalidState")),
     {JOB}),
    ("VCenterError TaskInProgress", lambda: VCenterError("x", fault=fault("TaskInProgress")),
     {JOB}),
    *[(f"VCenterError {name}", (lambda name=name: VCenterError("x", fault=fault(name))), NEVER)
      for name in ("DuplicateName", "FileAlreadyExists", "InvalidName", "InvalidDatastorePath",
                   "NoPermission", "NotSupported", "InvalidArgument", "OvfImport")],
    ("NotAuthenticatedError", lambda: NotAuthenticatedError(
        "session gone", fault=fault("NotAuthenticated")), {LOGIN, JOB}),
    # Only the class logs in again: a plain VCenterError naming the fault does not.
    ("VCenterError NotAuthenticated", lambda: VCenterError(
        "x", fault=fault("NotAuthenticated")), {JOB}),
    ("InvalidLoginError", lambda: InvalidLoginError("wrong password"), {JOB}),
    # A stale object: refresh the inventory, then try again (or, later, as a job).
    ("ManagedObjectNotFoundError", lambda: ManagedObjectNotFoundError("gone"),
     {INVENTORY, JOB}),
    ("LeaseError", lambda: LeaseError("lease went to error", vm="web"), {JOB}),
    ("LeaseError InvalidArgument", lambda: LeaseError("x", fault=fault("InvalidArgument")),
     NEVER),
    ("TaskError", lambda: TaskError("task failed", fault=fault("InvalidState")), {JOB}),
    ("TaskError FileAlreadyExists", lambda: TaskError("x", fault=fault("FileAlreadyExists")),
     NEVER),
    # After the import: a step's fault is as permanent as it is alone, and only
    # a new import runs a step again.
    ("WaitForIPTimeout", lambda: WaitForIPTimeout("no IP", step="wait_for_ip"), NEVER),
    ("PostImportError", lambda: PostImportError("x", step="power_on"), {JOB}),
    ("PostImportError(TransportError)", lambda: after(TransportError("reset")), {JOB}),
    ("PostImportError(NotAuthenticatedError)", lambda: after(NotAuthenticatedError("x")),
     {JOB}),
    ("PostImportError(TaskError)", lambda: after(TaskError("x", fault=fault("InvalidState"))),
     {JOB}),
    ("PostImportError(TaskError NotSupported)",
     lambda: after(TaskError("x", fault=fault("NotSupported"))), NEVER),
    ("PostImportError(NameConflict)", lambda: after(NameConflict("x")), NEVER),
    ("PostImportError(TransferError 404)", lambda: after(TransferError("x", status=404)),
     NEVER),
    ("PostImportError(UntrustedTarget)", lambda: after(UntrustedTarget("x")), NEVER),
    ("PostImportError(RuntimeError)", lambda: after(RuntimeError("x")), {JOB}),
    ("PostImportError(PostImportError(NameConflict))", lambda: after(after(NameConflict("x"))),
     NEVER),
    # Anything else is worth a new import; a group is not looked into.
    ("RuntimeError", lambda: RuntimeError("x"), {JOB}),
    ("TimeoutError", lambda: TimeoutError(), {JOB}),
    ("OSError", lambda: OSError("x"), {JOB}),
    ("IllegalTransition", lambda: IllegalTransition("web: spec → upload"), {JOB}),
    ("ExceptionGroup(TransportError)", lambda: ExceptionGroup("g", [TransportError("x")]),
     {JOB}),
    ("ExceptionGroup(NameConflict)", lambda: ExceptionGroup("g", [NameConflict("x")]), {JOB}),
    # A cancellation or an interrupt is never retried, at any level.
    ("asyncio.CancelledError", lambda: asyncio.CancelledError(), NEVER),
    ("BaseExceptionGroup(CancelledError)",
     lambda: BaseExceptionGroup("g", [asyncio.CancelledError()]), NEVER),
    ("KeyboardInterrupt", lambda: KeyboardInterrupt(), NEVER),
]

#: The rows that reach the sites: exceptions (a site lets cancellation through).
SITE_ROWS = [row for row in TABLE if issubclass(type(row[1]()), Exception)]


@pytest.mark.parametrize(("make", "cured_by"), [row[1:] for row in TABLE],
                         ids=[row[0] for row in TABLE])
def test_the_table_says_at_which_level_a_retry_may_cure_each_error(
    make: ErrorFactory, cured_by: frozenset[RetryScope],
) -> None:
    error = make()
    assert retry_scopes(error) == cured_by
    assert {scope for scope in RetryScope if retryable(error, scope)} == cured_by


def test_the_scopes_from_the_least_to_the_most_done_again() -> None:
    assert list(RetryScope) == [CALL, LOGIN, UPLOAD, INVENTORY, JOB]


def test_the_faults_retrying_cannot_fix() -> None:
    assert PERMANENT_FAULTS == {
        "DuplicateName", "FileAlreadyExists", "InvalidName", "InvalidDatastorePath",
        "NoPermission", "NotSupported", "InvalidArgument", "OvfImport",
    }


@pytest.mark.anyio
async def test_anyio_s_cancellation_is_retried_nowhere() -> None:
    cancelled = anyio.get_cancelled_exc_class()()
    assert retry_scopes(cancelled) == NEVER


# --- every retry asks the table ---------------------------------------------------


@pytest.mark.parametrize("module", [batch, uploads, session_module],
                         ids=["batch", "uploads", "session"])
def test_each_site_s_predicate_is_the_table_s(module: ModuleType) -> None:
    assert module.retryable is asyncovf.errors.retryable
    assert not hasattr(module, "PERMANENT_FAULTS")
    for own in ("_retryable", "is_transient_transfer", "retry_if_exception_type"):
        assert not hasattr(module, own), f"{module.__name__}.{own}: a predicate of its own"


Verdict = Callable[[BaseException, RetryScope], bool]


def table_at(monkeypatch: pytest.MonkeyPatch, module: ModuleType, scope: RetryScope,
             turned: bool) -> Verdict:
    """The verdicts ``module`` is to follow: the table's, or (``turned``) the table's with
    ``scope``'s turned round, patched into ``module`` where it looks the table up."""
    def verdict(error: BaseException, asked: RetryScope) -> bool:
        return asyncovf.errors.retryable(error, asked) != (turned and asked is scope)

    if turned:
        monkeypatch.setattr(module, "retryable", verdict)
    return verdict


SITES = pytest.mark.parametrize(("make"), [row[1] for row in SITE_ROWS],
                                ids=[row[0] for row in SITE_ROWS])
TURNED = pytest.mark.parametrize("turned", [False, True], ids=["table", "turned"])


class ScriptedClient:
    """Stands in for SoapClient: ``fail`` maps a method to the error its first call raises;
    RetrievePropertiesEx answers one page and a token, its continuation the last page."""

    def __init__(self, fail: dict[str, BaseException]) -> None:
        self.fail = dict(fail)
        self.sent: list[str] = []

    async def invoke(self, mo: Any, method: str, **kwargs: Any) -> Any:
        self.sent.append(method)
        if method in self.fail:
            raise self.fail.pop(method)
        if method == "RetrievePropertiesEx":
            return SimpleNamespace(objects=["first"], token="token-1")
        if method == "ContinueRetrievePropertiesEx":
            return SimpleNamespace(objects=["last"], token=None)
        return None

    def forget_session(self) -> None:
        pass


def scripted_session(client: ScriptedClient) -> VCenterSession:
    session = VCenterSession(ConnectionSettings("vc.invalid", "user", "secret"),
                             retry=RetryPolicy(attempts=2, initial_wait=0, max_wait=0))
    session.client = client  # type: ignore[assignment]
    session._content = SimpleNamespace(
        sessionManager=vim.SessionManager("SessionManager"),
        propertyCollector=vmodl.query.PropertyCollector("propertyCollector"),
        rootFolder=vim.Folder("group-d1"),
    )
    return session


@pytest.mark.anyio
@TURNED
@pytest.mark.parametrize("scope", [CALL, LOGIN], ids=["CALL", "LOGIN"])
@SITES
async def test_a_soap_call_is_sent_again_or_after_a_new_login_as_the_table_says(
    monkeypatch: pytest.MonkeyPatch, make: ErrorFactory, scope: RetryScope, turned: bool,
) -> None:
    verdict = table_at(monkeypatch, session_module, scope, turned)
    error = make()
    relogin, resend = verdict(error, LOGIN), verdict(error, CALL)
    client = ScriptedClient({"FindChild": error})
    session = scripted_session(client)
    if relogin or resend:
        await session.invoke(vim.SearchIndex("SearchIndex"), "FindChild")
    else:
        with pytest.raises(type(error)):
            await session.invoke(vim.SearchIndex("SearchIndex"), "FindChild")
    assert session.relogins == int(relogin)
    assert session.retries == int(resend and not relogin)
    assert client.sent.count("FindChild") == (2 if relogin or resend else 1)


@pytest.mark.anyio
@TURNED
@SITES
async def test_a_lost_page_restarts_the_retrieval_as_the_table_says(
    monkeypatch: pytest.MonkeyPatch, make: ErrorFactory, turned: bool,
) -> None:
    verdict = table_at(monkeypatch, session_module, CALL, turned)
    error = make()
    client = ScriptedClient({"ContinueRetrievePropertiesEx": error})
    session = scripted_session(client)
    relogin, restart = verdict(error, LOGIN), verdict(error, CALL)
    if relogin or restart:
        assert await session.retrieve_contents([]) == ["first", "last"]
    else:
        with pytest.raises(type(error)):
            await session.retrieve_contents([])
    restarted = restart and not relogin
    assert client.sent.count("RetrievePropertiesEx") == (2 if restarted else 1)
    assert session.retries == int(restarted)


@pytest.mark.anyio
@TURNED
@SITES
async def test_a_file_is_uploaded_again_as_the_table_says(
    monkeypatch: pytest.MonkeyPatch, make: ErrorFactory, turned: bool,
) -> None:
    verdict = table_at(monkeypatch, uploads, UPLOAD, turned)
    error = make()
    failures = [error]
    sent: list[str] = []

    @asynccontextmanager
    async def open_content(package: Any, href: str, **options: Any) -> AsyncIterator[Any]:
        yield SimpleNamespace(chunks=lambda: iter(()))

    async def upload(http: Any, target: UploadTarget, chunks: Any, **options: Any) -> None:
        sent.append(target.file_name)
        if failures:
            raise failures.pop()

    monkeypatch.setattr(uploads, "open_content", open_content)
    monkeypatch.setattr(uploads, "upload", upload)
    session = SimpleNamespace(client=SimpleNamespace(session_cookie=None, uploads=None),
                              endpoint=SimpleNamespace(insecure=True))
    options = SimpleNamespace(upload_attempts=2, upload_initial_wait=0, upload_max_wait=0,
                              verify_manifest=True, chunk_size=1024, stall_timeout=1.0)
    state = JobState("web")
    target = UploadTarget("web-disk1.vmdk", "https://esx.invalid/nfc/disk-0.vmdk", 0, True)
    again = verdict(error, UPLOAD)
    if again:
        await uploads.upload_verified(session, None, target, options,  # type: ignore[arg-type]
                                      lambda n: None, state=state)
    else:
        with pytest.raises(type(error)):
            await uploads.upload_verified(session, None, target,  # type: ignore[arg-type]
                                          options, lambda n: None, state=state)
    assert state.upload_retries == int(again)
    assert len(sent) == (2 if again else 1)


class Inventory:
    """Stands in for the job's inventory cache; counts the refreshes a stale object asks for."""

    def __init__(self) -> None:
        self.refreshes = 0

    async def get(self, session: Any) -> object:
        return object()

    async def refresh(self, session: Any, *, seen: object) -> object:
        self.refreshes += 1
        return object()


async def run_failing_once(monkeypatch: pytest.MonkeyPatch, error: BaseException, *,
                           touched_vcenter: bool, job_retries: int,
                           inventory: Inventory) -> JobResult:
    """One job whose first attempt raises ``error`` and whose next one imports."""
    failures = [error]
    result = JobResult(spec=SimpleNamespace(name="web"))  # type: ignore[arg-type]

    async def attempt(*args: Any, **kwargs: Any) -> bool:
        assert result.state is not None
        result.state.touched_vcenter = touched_vcenter
        if failures:
            raise failures.pop()
        return True

    monkeypatch.setattr(batch, "check_job", lambda *args, **kwargs: None, raising=False)
    monkeypatch.setattr(batch, "_attempt", attempt)
    context = JobContext(inventory=inventory,  # type: ignore[arg-type]
                         settings=RunSettings(job_retries=job_retries))
    await run_job(object(), result, SimpleNamespace(descriptor=None),  # type: ignore[arg-type]
                  context)
    return result


@pytest.mark.anyio
@TURNED
@SITES
async def test_a_job_is_run_again_as_the_table_says(
    monkeypatch: pytest.MonkeyPatch, make: ErrorFactory, turned: bool,
) -> None:
    verdict = table_at(monkeypatch, batch, JOB, turned)
    error = make()
    # ImportVApp was sent: a stale object is not refreshed for free.
    result = await run_failing_once(monkeypatch, error, touched_vcenter=True, job_retries=1,
                                    inventory=Inventory())
    again = verdict(error, JOB)
    assert result.attempts == (2 if again else 1)
    assert result.status is (JobStatus.IMPORTED if again else JobStatus.FAILED)


@pytest.mark.anyio
@TURNED
@SITES
async def test_a_stale_object_refreshes_the_inventory_as_the_table_says(
    monkeypatch: pytest.MonkeyPatch, make: ErrorFactory, turned: bool,
) -> None:
    verdict = table_at(monkeypatch, batch, INVENTORY, turned)
    error = make()
    inventory = Inventory()
    # Nothing reached vCenter, and no job retry: only the refresh tries again.
    result = await run_failing_once(monkeypatch, error, touched_vcenter=False, job_retries=0,
                                    inventory=inventory)
    again = verdict(error, INVENTORY)
    assert inventory.refreshes == int(again)
    assert (result.attempts, result.status) == (
        1, JobStatus.IMPORTED if again else JobStatus.FAILED)
