"""A logged-in vCenter session, owned by exactly one worker for its lifetime.

Opening it retrieves the service content, switches to the server's API version
and logs in; closing it logs out — on every exit path, including cancellation,
under a shielded, time-bounded scope (the graceful-goodbye idiom) — and then
closes the HTTP pool. Sessions opened = sessions closed, always.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import anyio
from pyVmomi import vim, vmodl
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base

from asyncovf.errors import RetryScope, TaskError, TransportError, VCenterError, retryable
from asyncovf.vsphere.cleanup import Stage, bounded_cleanup, current_budget
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.soap import SoapClient, describe_fault
from asyncovf.vsphere.template import RequestTemplates, sentinel
from asyncovf.vsphere.wirelog import WireLog

log = logging.getLogger(__name__)

#: How long Logout may take before we give up on it (it must not hold up Ctrl-C).
LOGOUT_TIMEOUT: Final = 10.0


#: Methods that may be sent again when their answer was lost (pyVmomi names).
#: A lost answer may mean the call was carried out, so a method belongs here
#: only if carrying it out twice leaves the server as once. Per the vSphere API
#: reference:
#:
#: * ``RetrieveContent`` (RetrieveServiceContent), ``FindChild`` and
#:   ``FindByInventoryPath`` (SearchIndex) only read.
#: * ``RetrievePropertiesEx`` only reads. When it pages, the server keeps the
#:   rest of a lost answer's results for the session until it ends (Logout).
#: * ``CreateImportSpec`` (OvfManager) computes an import spec from the
#:   descriptor and returns it; it creates nothing on the server.
#: * ``Progress`` (HttpNfcLeaseProgress) sets the lease's percentage and keeps
#:   it alive: sending the same percentage twice is sending it once.
#: * ``Abort`` (HttpNfcLeaseAbort) ends the lease; a second one finds it ended
#:   and is refused with InvalidState, which is not retried.
#:
#: Left out on purpose: ``ContinueRetrievePropertiesEx`` — "each token may be
#: passed to ContinueRetrievePropertiesEx only once" (RetrieveResult.token), so
#: a lost page is read again by starting over (:meth:`VCenterSession.retrieve_contents`);
#: ``CreateContainerView`` — it creates a view that lives until DestroyView or
#: the end of the session, so a resent call would leak one; and anything that
#: creates, destroys or changes (Login, ImportVApp, CreateFolder, Destroy,
#: DestroyView, PowerOff, Complete, ...).
IDEMPOTENT_METHODS: Final = frozenset({
    "RetrieveContent", "RetrievePropertiesEx", "FindChild", "FindByInventoryPath",
    "CreateImportSpec", "Progress", "Abort",
})


def refused(error: BaseException) -> bool:
    """vCenter, or what stands in front of it, turned the call away unserved (HTTP 503:
    overloaded, or at its session limit): it happened nowhere, so any call, even
    ImportVApp or Logout, may be sent again."""
    return isinstance(error, TransportError) and error.status == 503


def _call_retryable(error: BaseException) -> bool:
    return retryable(error, RetryScope.CALL)


#: Objects per property-collector page (RetrieveOptions.maxObjects). pyVmomi
#: parses a whole answer in one synchronous call on the event loop, so a page
#: is the longest every other task waits while the inventory loads. Measured
#: with benchmarks/loop_stall.py (8,181 objects, 2,000 hosts with 3 VMkernel
#: NICs each, 2 shared cores): 1,000 a page held the loop 1.0-1.1 s per page,
#: 100 about 150 ms (200: 275-315 ms, 50: 80-85 ms), and the load took no
#: longer (82 round trips instead of 9, 0.9-1.1x the time). Below 100 the
#: garbage collector's own pauses (200-250 ms on that heap) are the longer
#: stall, while round trips keep doubling: each costs a network round trip.
RETRIEVE_PAGE_SIZE: Final = 100


def backoff(initial: float, maximum: float) -> wait_base:
    """Exponential backoff from ``initial`` up to ``maximum``, plus up to ``initial`` of jitter.

    The jitter keeps many workers that failed together from retrying together.
    """
    return wait_exponential(multiplier=initial, max=maximum) + wait_random(0, initial)


@dataclass(frozen=True)
class RetryPolicy:
    """How SOAP calls are retried on transport errors.

    ``attempts`` bounds the sends of a call that failed on the connection, a
    timeout or a 5xx. A call turned away unserved (HTTP 503: vCenter overloaded,
    or at its session limit) is sent again for up to ``refused_for`` seconds
    instead, backing off from the first resend: it happened nowhere, and a
    vCenter shedding load asks for exactly that, so overload costs a job time
    while the concurrency comes down, not the job. ``attempts=1`` sends nothing
    twice; ``refused_for=0`` holds refusals to ``attempts`` too.
    """

    attempts: int = 3
    initial_wait: float = 0.2
    max_wait: float = 5.0
    refused_for: float = 30.0

    def stop(self, state: RetryCallState) -> bool:
        """Tenacity's stop: whether the call that just failed is given up."""
        error = state.outcome.exception() if state.outcome is not None else None
        if self.attempts < 2:
            return True
        if error is not None and refused(error) and self.refused_for > 0:
            return state.seconds_since_start is not None and \
                state.seconds_since_start >= self.refused_for
        return state.attempt_number >= self.attempts


class VCenterSession:
    """One vCenter login: a :class:`SoapClient`, its service content and helpers."""

    def __init__(
        self,
        connection: ConnectionSettings,
        *,
        connections: int = 4,
        retry: RetryPolicy | None = None,
    ) -> None:
        # The one Endpoint of the settings: every session of a run shares its TLS contexts.
        endpoint = self.endpoint = connection.endpoint()
        self.retry = retry or RetryPolicy()
        self.relogins = 0
        self.retries = 0
        #: Logouts and logins again by :meth:`renew`.
        self.renewals = 0
        self._connection = connection
        self.client = SoapClient(endpoint, call_timeout=connection.call_timeout,
                                 connections=connections,
                                 wire_log=WireLog(connection.wire_log)
                                 if connection.wire_log else None)
        self._content: Any = None
        #: RetrievePropertiesEx's request per shape (:meth:`_retrieve_request`).
        #: A managed object's id is written unescaped by pyVmomi, so filled in as is.
        self._retrieve_templates = RequestTemplates(escape=False)
        self._logged_in = False
        self._closed = False
        #: Logged in at some point (stays true after Logout): for counting sessions.
        self.opened = False

    def __repr__(self) -> str:
        state = "logged-in" if self._logged_in else "closed"
        return f"<VCenterSession {self._connection.username}@{self.endpoint.host} {state}>"

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> VCenterSession:
        await self.client.__aenter__()
        try:
            instance = self.client.mor("ServiceInstance", "ServiceInstance")
            content = await self.client.invoke(instance, "RetrieveContent")
            self.client.use_api_version(content.about.apiVersion)
            self._content = content
            await self._login()
            self._logged_in = self.opened = True
        except BaseException:
            await self.client.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Log out (bounded, shielded from cancellation), then close the pool."""
        self._closed = True
        try:
            await self._log_out()
        finally:
            await self.client.aclose()

    async def _log_out(self) -> None:
        """Logout if logged in: bounded, shielded from cancellation, never raising.

        A Logout an overloaded vCenter turns away (HTTP 503) is sent again,
        backing off, within the bound: a session left open is one vCenter
        carries until it times out, and counts against its session limit.
        """
        if not self._logged_in:
            return
        self._logged_in = False
        # A failed goodbye must not mask the real error: recorded and logged only.
        with bounded_cleanup(f"logout from {self.endpoint.host}", timeout=LOGOUT_TIMEOUT,
                             stage=Stage.LOGOUT):
            # Until it goes through: the cleanup's bound, not the policy, ends it.
            retrying = AsyncRetrying(
                wait=backoff(self.retry.initial_wait, self.retry.max_wait),
                retry=retry_if_exception(refused),
                before_sleep=lambda state: self._note_retry("Logout", state),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    await self.client.invoke(self._content.sessionManager, "Logout")

    # -- accessors ---------------------------------------------------------------

    @property
    def content(self) -> Any:
        """``vim.ServiceInstanceContent`` (root folder, OVF manager, property collector…)."""
        if self._content is None:
            raise RuntimeError("VCenterSession used outside 'async with'")
        return self._content

    @property
    def logged_in(self) -> bool:
        return self._logged_in

    @property
    def api_version(self) -> str:
        return str(self.content.about.apiVersion)

    async def invoke(self, mo: Any, method: str, **kwargs: Any) -> Any:
        """Call a vSphere method (pyVmomi name) on ``mo``, retrying what is safe to retry.

        What a retry may cure is :func:`~asyncovf.errors.retryable`'s to say:

        * ``NotAuthenticated`` (the session expired; ``RetryScope.LOGIN``): log in
          again once, then retry.
        * Transport errors and timeouts (``RetryScope.CALL``): retry with exponential
          backoff and jitter, but only methods that are safe to repeat
          (:data:`IDEMPOTENT_METHODS`).
          ImportVApp, Destroy or PowerOn are never repeated blindly: a lost answer
          may mean they happened.
        """
        return await self._call(method, lambda: self.client.invoke(mo, method, **kwargs))

    async def send(self, mo: Any, method: str, body: bytes) -> Any:
        """:meth:`invoke` with a request serialized beforehand (``SoapClient.send``).

        The same retries and re-login: a request's text holds no session state
        (the session cookie travels in a header), so it may be sent again as is.
        """
        return await self._call(method, lambda: self.client.send(mo, method, body))

    async def _call(self, method: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``call`` (one request of ``method``) under :meth:`invoke`'s retry rules."""
        relogged = False

        async def attempt_call() -> Any:
            nonlocal relogged
            try:
                return await call()
            except Exception as exc:
                if (not retryable(exc, RetryScope.LOGIN) or relogged
                        or method in ("Login", "Logout") or self._content is None
                        or self._closed):
                    raise
                relogged = True
                log.warning("session to %s expired; logging in again", self.endpoint.host)
                self.client.forget_session()
                await self._login()
                self._logged_in = True
                self.relogins += 1
                return await call()

        # A call not safe to repeat is sent again only when it was turned away
        # unserved (HTTP 503): then it happened nowhere, whatever it does.
        may_retry = _call_retryable if method in IDEMPOTENT_METHODS else refused
        retrying = AsyncRetrying(
            stop=self.retry.stop,
            wait=backoff(self.retry.initial_wait, self.retry.max_wait),
            retry=retry_if_exception(may_retry),
            before_sleep=lambda state: self._note_retry(method, state),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await attempt_call()
        raise AssertionError("unreachable")  # pragma: no cover

    async def renew(self) -> None:
        """Log out and in again, ending everything the server keeps for this login.

        vCenter scopes an HttpNfcLease to the session that created it (a lease's
        id reads ``session[…]…``) and ends it when the session ends. When
        ImportVApp's answer is lost the lease exists but we never learned its
        reference, so ending the session is the one way to end that lease now
        rather than at its ``leaseTimeout``. Logout is :meth:`aclose`'s (shielded,
        bounded); a failed Login raises, and the next call that meets
        ``NotAuthenticated`` logs in again.
        """
        if self._content is None:
            raise RuntimeError("VCenterSession used outside 'async with'")
        await self._log_out()
        self.client.forget_session()
        await self._login()
        self._logged_in = True
        self.renewals += 1

    def _note_refused(self, method: str, error: BaseException) -> None:
        self.retries += 1
        log.warning("%s to %s refused (%s); sending it again", method, self.endpoint.host, error)

    def _note_retry(self, method: str, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if error is not None and refused(error):
            self._note_refused(method, error)
            return
        self.retries += 1
        log.warning("%s failed (%s); retrying", method, error or "?")

    async def _login(self) -> None:
        await self.client.invoke(
            self.content.sessionManager,
            "Login",
            userName=self._connection.username,
            password=self._connection.password,
        )

    # -- property collector ----------------------------------------------------------

    async def retrieve(self, obj: Any, paths: Sequence[str]) -> dict[str, Any]:
        """Read properties of one object in one round trip.

        Raises :class:`~asyncovf.errors.ManagedObjectNotFoundError` if the object is gone.
        """
        collector = self.content.propertyCollector
        request = self._retrieve_request(obj, paths)
        contents = await self._retrieve_pages(
            lambda: self.send(collector, "RetrievePropertiesEx", request))
        values: dict[str, Any] = {name: None for name in paths}
        for content in contents:
            for prop in content.propSet or ():
                values[prop.name] = prop.val
            for missing in content.missingSet or ():
                fault = missing.fault
                raise VCenterError(
                    f"cannot read {missing.path} of {obj._moId}: {describe_fault(fault)}",
                    fault=fault, method="RetrievePropertiesEx",
                )
        return values

    def _retrieve_request(self, obj: Any, paths: Sequence[str]) -> bytes:
        """:meth:`retrieve`'s RetrievePropertiesEx request, as pyVmomi writes it.

        Lease and task polls send one request shape again and again, differing
        only in the object's id; building the filter objects and walking them
        is most of a poll's serialization. So each shape (API version, object
        type, paths) is serialized once with a sentinel id and later requests
        are filled in (:class:`~asyncovf.vsphere.template.RequestTemplate`);
        a template is kept only if its first fill equals pyVmomi's text.
        """
        return self._retrieve_templates.request(
            (self.api_version, type(obj), obj._serverGuid, tuple(paths)), [obj._moId],
            lambda: self._serialize_retrieve(obj, paths),
            lambda: self._serialize_retrieve(type(obj)(sentinel(0), obj._stub, obj._serverGuid),
                                             paths))

    def _serialize_retrieve(self, obj: Any, paths: Sequence[str]) -> bytes:
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=obj, skip=False)],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(
                type=type(obj), pathSet=list(paths), all=False)],
        )
        options = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=RETRIEVE_PAGE_SIZE)
        return self.client.serialize(self.content.propertyCollector, "RetrievePropertiesEx",
                                     specSet=[spec], options=options)

    async def retrieve_contents(self, specs: Sequence[Any],
                                page_size: int = RETRIEVE_PAGE_SIZE) -> list[Any]:
        """RetrievePropertiesEx with continuation: all ``ObjectContent`` for ``specs``."""
        collector = self.content.propertyCollector
        options = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=page_size)
        return await self._retrieve_pages(lambda: self.invoke(
            collector, "RetrievePropertiesEx", specSet=list(specs), options=options))

    async def _retrieve_pages(self, first: Callable[[], Awaitable[Any]]) -> list[Any]:
        """The pages of a retrieval whose first page ``first`` asks for.

        A continuation token may be used once only (vSphere API reference,
        RetrieveResult.token): after a page's answer is lost, sending the token
        again is refused if the server had used it. So a lost page is not
        resent; the retrieval starts over, as many times as the retry policy
        allows an idempotent call.
        """
        collector = self.content.propertyCollector
        for attempt in range(1, self.retry.attempts + 1):
            result = await first()
            objects: list[Any] = []
            try:
                while result is not None:
                    objects.extend(result.objects or ())
                    if not result.token:
                        break
                    result = await self.invoke(collector, "ContinueRetrievePropertiesEx",
                                               token=result.token)
            except Exception as exc:
                if attempt == self.retry.attempts or not retryable(exc, RetryScope.CALL):
                    raise
                self.retries += 1
                log.warning("a page of RetrievePropertiesEx was lost (%s); starting over", exc)
                await anyio.sleep(min(self.retry.initial_wait * 2 ** (attempt - 1),
                                      self.retry.max_wait))
                continue
            return objects
        raise AssertionError("unreachable")  # pragma: no cover

    # -- tasks -------------------------------------------------------------------------

    async def wait_for_task(self, task: Any,
                            on_info: Callable[[Any], None] | None = None) -> Any:
        """Poll a task until it ends; return its result or raise :class:`TaskError`.

        Unbounded: callers bound it with ``anyio.fail_after``. Polling with capped
        backoff costs one cheap call per step; WaitForUpdatesEx would need a
        property filter per task, which is more calls for short tasks.
        ``on_info`` is told each ``TaskInfo`` read (its progress, say).
        """
        delay = 0.02
        while True:
            info = (await self.retrieve(task, ["info"]))["info"]
            if on_info is not None:
                on_info(info)
            if info.state == vim.TaskInfo.State.success:
                return info.result
            if info.state == vim.TaskInfo.State.error:
                raise TaskError(
                    f"{info.descriptionId or info.name}: {describe_fault(info.error)}",
                    fault=info.error, method=str(info.name),
                )
            await anyio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def log_in_shielded(session: VCenterSession) -> None:
    """Open ``session``; an interrupt mid-login lets the login end, then logs out.

    A Login the server carries out must be followed by a Logout. Cancelled
    mid-call, a login could still succeed on the server with nobody left to
    log it out. So the login runs shielded — as long as it takes, each call
    bounded by the call timeout — and an interrupt only bounds what is left
    of it to :data:`LOGOUT_TIMEOUT`; a session it opened is closed at once,
    before the cancellation goes on (``session.opened`` tells it had logged in).
    Every worker that owns a session opens it this way.
    """
    shield = anyio.CancelScope(shield=True)
    done = anyio.Event()
    outcome: list[BaseException | None] = []

    async def log_in() -> None:
        with shield:
            try:
                await session.__aenter__()
            except BaseException as exc:  # handed to the caller, not to the task group
                outcome.append(exc)
            else:
                outcome.append(None)
            finally:
                done.set()

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(log_in)
            try:
                await done.wait()
            except anyio.get_cancelled_exc_class():
                # What is left of the login is bounded: by LOGOUT_TIMEOUT, and after
                # an interrupt by the shared budget, leaving the Logout its reserve.
                limit = anyio.current_time() + LOGOUT_TIMEOUT
                budget = current_budget.get()
                if budget is not None:
                    limit = min(limit, budget.limit())
                shield.deadline = min(shield.deadline, limit)
                raise
    except anyio.get_cancelled_exc_class():
        if outcome == [None]:  # logged in after all: log out before leaving
            await session.aclose()
        raise
    if outcome[0] is not None:
        raise outcome[0]


@dataclass
class SessionTally:
    """The sessions a pool of workers opened and closed: equal once the pool is done.

    Both pools (the import engine's and ``asyncovf cleanup``'s) open and close
    every worker's session through it, so the one subtle case — an interrupted
    login that got through, and was logged out at once — is counted one way.
    """

    opened: int = 0
    closed: int = 0

    async def log_in(self, session: VCenterSession) -> None:
        """:func:`log_in_shielded`, counted."""
        try:
            await log_in_shielded(session)
        finally:
            if session.opened:
                self.opened += 1
                if not session.logged_in:  # interrupted, and logged out already
                    self.closed += 1

    async def log_out(self, session: VCenterSession) -> None:
        """``session.aclose()`` (shielded, bounded Logout), counted."""
        try:
            await session.aclose()
        finally:
            self.closed += 1


__all__ = ["IDEMPOTENT_METHODS", "LOGOUT_TIMEOUT", "RetryPolicy", "SessionTally",
           "VCenterSession", "backoff", "log_in_shielded", "refused"]
