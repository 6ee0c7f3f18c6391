"""Behaviours: the business-logic loops an agent runs concurrently.

A behaviour owns a mailbox (filled in batches by the agent's consumers), a step loop
(`run()` again and again for the cyclic kind, once for one-shot, on a period for periodic)
and the settling of what it received: a message is acked when the behaviour is done with it
(the next `receive()`, the end of the `run()` step, or an explicit `msg.ack()`); a step that
raises hands its unsettled messages to the agent's retry / dead-letter path. A failing step
is logged and the loop goes on after a backoff, without disturbing other behaviours.
The mailbox is bounded by the consumer prefetch: the broker never hands out more.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any, Generic

from . import tracing
from .amqp.errors import AMQPError
from .batching import Batching
from .behaviour_lifecycle import BehaviourLifecycle, RunEnd
from .message import Message, ack_all
from .metrics import STEP_SAMPLE_EVERY, StepHistogram
from .publishing import PublishSurface
from .rpc_schemas import body_schema
from .template import declared_body_type
from .tracing import TRACEPARENT, adopt

if TYPE_CHECKING:
    # PEP 696 default: a bare `Behaviour` means `Behaviour[Agent]` (so a subclass that
    # does not name its agent class still passes `--strict`). typing.TypeVar takes a
    # default from Python 3.13 on; type checkers read typing_extensions' stubs, and at
    # run time the default changes nothing, so the package needs no typing_extensions.
    from typing_extensions import TypeVar

    from .agent import Agent
    from .template import Template

    AgentT = TypeVar("AgentT", bound="Agent", default="Agent")
else:
    from typing import TypeVar

    AgentT = TypeVar("AgentT", bound="Agent")

log = logging.getLogger("munggoggo.behaviour")

CREATED, RUNNING, STOPPED, FAILED, DONE = "created", "running", "stopped", "failed", "done"
YIELD_EVERY = 32  # steps in a row before a cyclic behaviour yields to the event loop
# A cyclic step that polled an empty mailbox (`receive()` returned None at once) and took
# less than this is "idle": the next step waits for mail, at most this long, doubling up
# to IDLE_WAIT_MAX while the behaviour stays idle. Mail wakes it at once, so only a polling
# behaviour's non-message work is paced; a busy one never waits (docs/decisions.md).
IDLE_WAIT_MIN = 0.001
IDLE_WAIT_MAX = 0.05
_current_trace = TRACEPARENT.get  # bound once: read for every message received


@dataclass(frozen=True)
class RestartPolicy:
    """What happens when a step raises: wait `initial`, doubling up to `maximum`; after
    `max_failures` consecutive failures (None: never) the behaviour stops as failed.

    Set it as a behaviour class's `restart_policy` attribute.

    Attributes:
        initial: seconds to wait after the first failure.
        maximum: the longest wait, in seconds.
        max_failures: consecutive failures after which the behaviour stops as failed
            (None: it never gives up).
    """

    initial: float = 0.1
    maximum: float = 10.0
    max_failures: int | None = None

    def delay(self, consecutive_failures: int) -> float:
        """The wait before the next step.

        Args:
            consecutive_failures: failed steps in a row, this one included.

        Returns:
            Seconds: `initial` doubled per failure after the first, at most `maximum`.
        """
        return min(self.maximum, self.initial * 2.0 ** max(0, consecutive_failures - 1))


class Behaviour(BehaviourLifecycle, PublishSurface, Generic[AgentT]):
    """A cyclic behaviour: `run()` is called again and again until the behaviour stops.

    Generic over the class of its agent: in `class Pinger(Behaviour[PingAgent])`,
    `self.agent` is a `PingAgent` to a type checker, with its own attributes and methods;
    a bare `Behaviour` is `Behaviour[Agent]`. The subscription is for type checkers only:
    at run time a `Behaviour[PingAgent]` is a plain `Behaviour` (nothing is checked).

    `binding_keys` subscribe it to topics on `munggoggo.topic` (its own queue
    `<identity>.<short_name>`); `template` routes matching direct messages to it. With
    `queue` the subscription uses that queue instead, shared by every behaviour (of any
    agent) that names it: competing consumers, each message handled by one of them.

    Attributes:
        agent: the agent that hosts it (typed as the class the behaviour is
            parameterized with).
        batching: class attribute, micro-batching of its `publish()` calls: None (the
            default) follows the agent's `AgentConfig.batching`, False never batches, True
            or a `Batching` is its own setting.

    Args:
        agent: the agent that hosts it.
        binding_keys: topic patterns (`*` one word, `#` zero or more) to subscribe to.
        template: which direct messages of the agent's inbox it receives.
        name: its short name within the agent (default: the class name); `name` is then
            `<identity>.<short name>`, as in the original munggoggo.
        prefetch: its consumer's prefetch (default `AgentConfig.prefetch`).
        queue: a queue shared with other behaviours instead of its own.

    Raises:
        ValueError: `queue` without binding keys, or an invalid queue name.
    """

    restart_policy = RestartPolicy()
    # The type its messages' bodies decode into, for the mesh's contract (`describe()`'s
    # `body_schema`, the AsyncAPI document); None: the template's `body_type`, if any.
    body_type: Any = None
    # A step that only polled an empty mailbox waits for mail (up to IDLE_WAIT_MAX) before
    # the next one, so a polling loop does not spin a core; False turns that off.
    pace_idle_steps = True
    # Micro-batching of this behaviour's publish() calls (core/batching.py): None follows
    # the agent's `AgentConfig.batching`; False: never batched; True or a `Batching`: its
    # own setting, whatever the agent's.
    batching: Batching | bool | None = None

    agent: AgentT

    def __init__(
        self,
        agent: AgentT,
        *,
        binding_keys: list[str] | None = None,
        template: Template | Any = None,
        name: str | None = None,
        prefetch: int | None = None,
        queue: str | None = None,
    ) -> None:
        self.agent = agent
        self.short_name = name or type(self).__name__
        # The publish surface (core/publishing.py): `publish`, `send` and `broadcast` go
        # through the agent, counted under this behaviour's name.
        self._publisher = agent
        self._publish_label = self.short_name
        self._batch_lane = agent.batch_lane(self.batching)
        self.binding_keys = list(binding_keys or [])
        if queue is not None:
            if not self.binding_keys:
                raise ValueError(
                    f"behaviour {self.short_name!r}: a shared queue is a topic subscription; "
                    "give binding_keys with queue="
                )
            if not queue or len(queue.encode()) > 255 or queue.startswith("amq."):
                raise ValueError(
                    f"behaviour {self.short_name!r}: invalid queue name {queue!r} "
                    "(1-255 bytes, not starting with 'amq.')"
                )
        self.template = template
        self.prefetch = prefetch or agent.config.prefetch
        self.state = CREATED
        self.failures = 0  # consecutive failed steps
        self.failed_steps = 0  # all failed steps (a Prometheus counter)
        self.steps = 0
        self.step_seconds = StepHistogram()
        self.last_error: str | None = None
        # The queue it consumes: `queue` if given, else set by the agent (binding_keys given)
        self.queue: str | None = queue
        self._mailbox: deque[Message] = deque()
        self._waiter: asyncio.Future[None] | None = None  # receive() waiting for mail
        self._sleeper: asyncio.Future[None] | None = None  # a backoff/period sleep
        self._inflight: list[Message] = []
        self._span: Any = None  # a tracer's consumer span for the messages in flight
        self._task: asyncio.Task[None] | None = None
        self._stop = False
        # Time this step spent waiting in receive(), and whether it waited for nothing: the
        # step histogram measures the work, not the wait for mail.
        self._waited = 0.0
        self._idle_step = False
        # Busy steps until the next timed one (metrics on; -1: never, metrics off). A step
        # that starts with an empty mailbox is always timed: idle pacing needs its duration.
        self._sample_in = -1
        # The agent's trace store, when it records traces (set when the behaviour starts).
        self._trace: Any = None
        # Idle pacing (_pace_idle): this step polled an empty mailbox / got a message; how
        # long the last idle step's wait was, and what is left of it after the step.
        self._polled_empty = False
        self._got_mail = False
        self._idle_wait = 0.0
        self._idle_remaining = 0.0
        self._set_up: asyncio.Event | None = None  # set once setup() has run
        self._run_end = RunEnd()  # how the current run ends (core/behaviour_lifecycle.py)

    @property
    def name(self) -> str:
        """`<agent identity>.<short name>` (the original munggoggo's behaviour name): what
        logs and prints show. Its queue has this name unless it shares one (`queue=`).
        """
        return f"{self.agent.identity}.{self.short_name}"

    def __str__(self) -> str:
        return self.name

    # -- user hooks ------------------------------------------------------------------

    async def setup(self) -> None:
        """Runs once before the first step."""

    async def run(self) -> None:
        """One step of the behaviour's work."""

    async def teardown(self) -> None:
        """Runs once after the last step."""

    # -- messaging helpers -------------------------------------------------------

    @property
    def mailbox_size(self) -> int:
        """Messages delivered and not received yet."""
        return len(self._mailbox)

    @property
    def inflight_size(self) -> int:
        """Messages the current step received; they are settled when it ends."""
        return len(self._inflight)

    async def receive(self, timeout: float | None = None) -> Message | None:
        """The next message of this behaviour's mailbox, or None.

        As in the original munggoggo and in SPADE: without a timeout (None or 0) it returns
        at once, the next message or None when the mailbox is empty; with `timeout=t` it
        waits up to t seconds for one; `timeout=math.inf` waits until a message arrives.
        It returns None at once when the behaviour is stopping. Receiving settles (acks)
        the message received before it in the same step.

        Args:
            timeout: seconds to wait for a message; None or 0: do not wait.

        Returns:
            The message, or None when none arrived in time.

        Raises:
            ValueError: a negative or NaN timeout.
        """
        inflight = self._inflight
        if inflight:
            self._settle_inflight()
        mailbox = self._mailbox
        if not mailbox:
            if timeout is not None and not timeout >= 0:
                raise ValueError(f"receive timeout must be >= 0 or None, got {timeout!r}")
            if self._stop or not timeout:
                self._idle_step = self._polled_empty = True
                return None
            waiter = self._waiter = self.agent.loop.create_future()
            waiting_since = perf_counter()
            try:
                if timeout == math.inf:
                    await waiter
                else:
                    await asyncio.wait_for(waiter, timeout)
            except TimeoutError:
                self._idle_step = True
                return None
            finally:
                self._waiter = None
                self._waited += perf_counter() - waiting_since
            if not mailbox:
                self._idle_step = True
                return None
            inflight = self._inflight
        msg = mailbox.popleft()
        self._got_mail = True
        inflight.append(msg)
        # The message's trace (or none) is current for what this step does next.
        hooks = tracing.hooks
        if hooks is not None:
            self._span = hooks.consumer(self._span, msg, self)
        else:
            headers = msg.delivery.properties.headers
            if headers or _current_trace() is not None:
                adopt(headers)
        trace = self._trace
        if trace is not None:
            trace.record_in(msg, self.short_name)
        return msg

    async def call(
        self, target: str, method: str, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Call an `@expose`d method of another agent: the agent's `call()`.

        Args:
            target: the identity of the agent called.
            method: the exposed method's name.
            *args: params by position.
            timeout: seconds to wait for the reply (None: `AgentConfig.rpc_timeout`).
            **kwargs: params by name.

        Returns:
            The method's result.

        Raises:
            ValueError: params given both by position and by name.
            RpcError: the call failed (unknown agent or method, bad params, the method
                raised, the agent is not running); `AgentUnreachable` and `RpcTimeout`
                are kinds of it.
        """
        return await self.agent.call(target, method, *args, timeout=timeout, **kwargs)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """Whether its step loop runs (state `running`)."""
        return self.state == RUNNING

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task running its step loop (None before the first start); done once the
        behaviour has ended or stopped.
        """
        return self._task

    def describe(self) -> dict[str, Any]:
        """What the control plane's `list_behaviours` and `status` report of it.

        Returns:
            Its name, kind, state, binding keys, `body_schema` (the JSON Schema of its
            `body_type`, else of its template's, or None), mailbox size, steps,
            consecutive failures and last error.
        """
        body_type = self.body_type
        if body_type is None:
            body_type = declared_body_type(self.template)
        return {
            "name": self.short_name,
            "kind": self.kind,
            "state": self.state,
            "binding_keys": self.binding_keys,
            "body_schema": body_schema(body_type),
            "mailbox": len(self._mailbox),
            "steps": self.steps,
            "failures": self.failures,
            "last_error": self.last_error,
            **self._lifecycle_info(),
        }

    kind = "cyclic"

    def start(self) -> None:
        """Start (or restart) the step loop as a task of the agent's loop."""
        if self._task is not None and not self._task.done():
            return
        self._stop = False
        self.state = RUNNING
        agent = self.agent
        self._sample_in = 0 if agent.config.metrics else -1
        self._trace = agent.trace if agent.records_traces else None
        self._set_up = asyncio.Event()
        self._begin_run()
        self._task = self.agent.loop.create_task(self._live(), name=self.name)
        self._task.add_done_callback(self._task_ended)
        self._task.add_done_callback(self._task_done)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """However the task ended (its setup raised what no handler catches, it was
        cancelled before its first step), a behaviour whose task is over never says
        running unless it is being stopped.
        """
        if self.state == RUNNING and not self._stop:
            self.state = FAILED
            if self.last_error is None:
                exc = None if task.cancelled() else task.exception()
                self.last_error = f"{type(exc).__name__}: {exc}" if exc else "task ended"

    async def wait_set_up(self) -> None:
        """Wait until setup() has run (or failed): then the behaviour's state is usable."""
        if self._set_up is not None:
            await self._set_up.wait()

    async def stop(self, timeout: float | None = None) -> None:
        """Let the current step finish, settle what it received, run teardown.

        A step still running after `timeout` seconds is cancelled and hands back the
        messages it held, uncounted (shutdown is not a failure); the mailbox goes back too.

        Args:
            timeout: seconds the current step may take (None: no limit).
        """
        self._stop = True
        self._wake()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.state == RUNNING:
            self.state = STOPPED
        # One that had already ended (failed) hands back what reached it since.
        self._return_mailbox()

    def _wake(self) -> None:
        for waiter in (self._waiter, self._sleeper):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def deliver_batch(self, messages: list[Message]) -> None:
        """Put messages in the mailbox and wake a waiting `receive()`: what the agent's
        consumer (a batch) and inbox routing (a direct message) call. Never awaits.

        Args:
            messages: received messages, unsettled; the behaviour settles them.
        """
        self._mailbox.extend(messages)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _return_mailbox(self) -> int:
        """Ending: hand undelivered messages back to the broker for someone else."""
        returned = 0
        while self._mailbox:
            self._mailbox.popleft().nack(requeue=True)
            returned += 1
        return returned

    def _return_inflight(self) -> None:
        """A step cut short by stopping hands back what it held, as it came: shutdown is
        not a failure, so no retry is counted and nothing is dead-lettered.
        """
        if not self._inflight:
            return
        if self._span is not None:
            self._span = self._span.finish(RuntimeError("behaviour stopped mid-step"))
        inflight, self._inflight = self._inflight, []
        for msg in inflight:
            msg.nack(requeue=True)  # no-op for what is settled or being handed off

    async def _release_consumer(self) -> None:
        """It ended by itself (failed or done): stop consuming before handing the mailbox
        back, or the broker would deliver what it requeues to this consumer again.
        """
        try:
            await asyncio.wait_for(
                self.agent.release_consumer(self), self.agent.config.drain_timeout
            )
        except (AMQPError, TimeoutError) as exc:  # the connection is down: consumers too
            log.warning("%s: could not cancel its consumer: %s", self.name, exc)

    def _settle_inflight(self) -> None:
        ack_all(self._inflight)
        if self._span is not None:
            self._span = self._span.finish(None)

    def _fail_inflight(self, exc: BaseException) -> None:
        if self._span is not None:
            self._span = self._span.finish(exc)
        inflight, self._inflight = self._inflight, []
        for msg in inflight:
            if not msg.settled:
                try:
                    self.agent.retry_or_dead_letter(msg, exc, self.short_name)
                except Exception as failure:  # never lose the message, never end the loop
                    self.agent.reject_failed(msg, failure, self.short_name)

    async def _main(self) -> None:
        try:
            await self.setup()
        except Exception as exc:
            log.exception("%s: setup failed", self.name)
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.state = FAILED
            await self._end()
            return
        finally:
            self._set_up.set()  # type: ignore[union-attr]
        try:
            await self._loop()
        except asyncio.CancelledError:
            if not self._stop:  # cancelled by someone else than stop(): it no longer runs
                self.last_error = "CancelledError: step loop cancelled"
                self.state = FAILED
            raise
        except BaseException as exc:  # the task ends: its state must say so, never running
            log.error("%s: step loop ended by %s", self.name, type(exc).__name__, exc_info=exc)
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.state = FAILED
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise  # the process is asked to end: that goes on
        finally:
            self._return_inflight()
            await self._end()
            try:
                await self.teardown()
            except Exception:
                log.exception("%s: teardown failed", self.name)

    async def _end(self) -> None:
        """The step loop is over: a behaviour that ended by itself (failed, or a one-shot
        done) gives up its consumer; either way it hands back its mailbox at once, for a
        competing consumer or (direct messages) the agent's inbox.
        """
        if not self._stop or self._ends_itself():
            await self._release_consumer()
        self._return_mailbox()

    async def _loop(self) -> None:
        """The cyclic step loop. One step is `_step`'s work, written out here rather
        than awaited: a coroutine less per message. Keep the two alike.
        """
        unyielded = 0
        mailbox = self._mailbox
        while not self._stop:
            # The clock is read for a sampled step and for one that starts with an empty
            # mailbox (it waits or polls: idle pacing needs its duration); a step served
            # from a full mailbox between two samples reads no clock at all.
            started = perf_counter() if not mailbox or not self._sample_in else 0.0
            try:
                await self.run()
            except Exception as exc:
                if not await self._step_failed(exc, started):
                    return
            except BaseException:
                self._end_step(started)
                raise
            else:
                if started:
                    self._end_step(started)
                else:  # _end_step's untimed half, written out
                    if self._sample_in > 0 and not self._idle_step:
                        self.step_seconds.unsampled += 1
                        self._sample_in -= 1
                    if self._polled_empty:
                        self._pace_idle(0.0)
                    elif self._idle_wait:
                        self._idle_wait = self._idle_remaining = 0.0
                    if self._waited:
                        self._waited = 0.0
                    self._got_mail = self._idle_step = False
                self.steps += 1
                if self.failures:
                    self.failures = 0
                inflight = self._inflight
                if inflight:  # _settle_inflight, written out
                    ack_all(inflight)
                    if self._span is not None:
                        self._span = self._span.finish(None)
            if self._idle_remaining > 0 and self.pace_idle_steps:
                # It polled an empty mailbox and did nothing else worth a loop cycle:
                # wait for mail instead of spinning (woken at once when some arrives).
                await self._wait_for_mail(self._idle_remaining)
                unyielded = 0
                continue
            # A run() that never suspends (its mailbox is full) must not starve the other
            # behaviours; yielding after every step would cost a loop cycle per message.
            unyielded += 1
            if unyielded >= YIELD_EVERY:
                unyielded = 0
                await asyncio.sleep(0)

    async def _step(self) -> bool:
        """Run one step; returns False when the loop should end."""
        started = perf_counter() if not self._mailbox or not self._sample_in else 0.0
        try:
            await self.run()
        except Exception as exc:
            return await self._step_failed(exc, started)
        except BaseException:
            self._end_step(started)
            raise
        self._end_step(started)
        self.steps += 1
        self.failures = 0
        if self._inflight:
            self._settle_inflight()
        return True

    async def _step_failed(self, exc: Exception, started: float) -> bool:
        """A step raised `exc`: count it, hand its messages to the retry / dead-letter
        path, back off. Returns False when the restart policy gives up.
        """
        try:
            self.failures += 1
            self.failed_steps += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("%s: step failed (%d in a row)", self.name, self.failures)
            self._fail_inflight(exc)
            policy = self.restart_policy
            if policy.max_failures is not None and self.failures >= policy.max_failures:
                self.state = FAILED
                return False
            await self._sleep(policy.delay(self.failures))
            return True
        finally:
            self._end_step(started)

    def _end_step(self, started: float) -> None:
        """A step is over (`started`: when it began by perf_counter, 0.0 if the clock was
        not read): time it when sampled, count it, set up idle pacing.
        """
        if started:
            elapsed = perf_counter() - started
            if self._sample_in >= 0 and not self._idle_step:
                if self._sample_in or self._waited:
                    # Timed because it started with an empty mailbox: it counts for itself
                    # alone (such steps are not like the busy ones) and the sampling's turn
                    # is kept for the next busy step.
                    self.step_seconds.observe(elapsed - self._waited, stands_for_unsampled=False)
                else:  # the sampling's turn: it stands for the busy steps since the last
                    self.step_seconds.observe(elapsed)
                    self._sample_in = STEP_SAMPLE_EVERY - 1
        else:
            elapsed = 0.0
            if self._sample_in > 0 and not self._idle_step:
                self.step_seconds.unsampled += 1
                self._sample_in -= 1
        if self._polled_empty:
            self._pace_idle(elapsed)
        elif self._idle_wait:
            self._idle_wait = self._idle_remaining = 0.0
        self._got_mail = False
        self._waited = 0.0
        self._idle_step = False

    def _pace_idle(self, elapsed: float) -> None:
        """After a step that polled an empty mailbox, set how long the next step waits
        for mail: nothing if the step also got a message (it drained the mailbox: work),
        else IDLE_WAIT_MIN doubling up to IDLE_WAIT_MAX over consecutive idle steps, less
        the time the step itself took.
        """
        self._polled_empty = False
        if self._got_mail:
            self._idle_wait = self._idle_remaining = 0.0
            return
        wait = min(self._idle_wait * 2, IDLE_WAIT_MAX) if self._idle_wait else IDLE_WAIT_MIN
        self._idle_wait = wait
        self._idle_remaining = wait - elapsed

    async def _wait_for_mail(self, seconds: float) -> None:
        """Wait until mail arrives, the behaviour is asked to stop, or `seconds` pass."""
        if self._mailbox or self._stop:
            return
        waiter = self._waiter = self.agent.loop.create_future()
        timer = self.agent.loop.call_later(seconds, _wake_future, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early when asked to stop."""
        if seconds <= 0 or self._stop:
            return
        sleeper = self._sleeper = self.agent.loop.create_future()
        try:
            await asyncio.wait_for(sleeper, seconds)
        except TimeoutError:
            pass
        finally:
            self._sleeper = None


def _wake_future(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
