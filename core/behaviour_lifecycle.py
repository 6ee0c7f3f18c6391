"""How a behaviour's run ends, as SPADE users know it: `kill()`, `is_killed()`, `exit_code`,
`await join()` and the `on_end()` hook.

`Behaviour` (core/behaviour.py) mixes `BehaviourLifecycle` in. Each start of a behaviour
begins one run, with its own `RunEnd` record; the run ends however it ends (its one-shot
`run()` returned, `kill()`, `stop()` or the agent stopping, a failure, a cancelled task) and
then, exactly once: its final state is set, `on_end()` is awaited, and `join()` returns.

A behaviour may also end itself with a final state of its choosing (`_end_run`), which is
how an `FSMBehaviour` (core/fsm.py) finishes, or fails on an undeclared transition.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("munggoggo.behaviour")

# Behaviour states (core/behaviour.py defines the same names; this module cannot import it).
_RUNNING, _STOPPED, _FAILED, _DONE = "running", "stopped", "failed", "done"
# The exit code of a run that ended without a kill() code: finished or stopped, or failed.
EXIT_OK, EXIT_FAILED = 0, 1


class RunEnd:
    """The record of one run of a behaviour: how it is asked to end and whether it has.

    Attributes:
        killed: `kill()` was called during this run.
        exit_code: None until the run is asked to end or has ended (see
            `BehaviourLifecycle.exit_code`).
        final_state: the state the behaviour ends in when it ends itself (kill, or an
            `FSMBehaviour` finishing), None otherwise.
        error: what `describe()` shows as `last_error` for a run that ends itself failed.
        ended: set once the run has ended and `on_end()` returned.
        concluded: the end of the run was handled (so `on_end()` runs once).
        begun: a run has started with this record (one made before the first start waits
            for that start: `join()` may be called before it).
    """

    __slots__ = (
        "begun",
        "concluded",
        "ended",
        "error",
        "exit_code",
        "final_state",
        "killed",
        "late",
    )

    def __init__(self) -> None:
        self.killed = False
        self.exit_code: Any = None
        self.final_state: str | None = None
        self.error: str | None = None
        self.ended = asyncio.Event()
        self.concluded = False
        self.begun = False
        # on_end() of a run whose task was cancelled before it began, run as its own task.
        self.late: asyncio.Task[None] | None = None


class BehaviourLifecycle:
    """`kill`, `is_killed`, `exit_code`, `join` and `on_end` for every behaviour."""

    if TYPE_CHECKING:
        # What this mixin uses of `Behaviour` (core/behaviour.py), which mixes it in.
        agent: Agent
        state: str
        last_error: str | None
        _stop: bool
        _run_end: RunEnd

        @property
        def name(self) -> str:
            """Declared for the mixin; defined in core/behaviour.py."""

        @property
        def task(self) -> asyncio.Task[None] | None:
            """Declared for the mixin; defined in core/behaviour.py."""

        def _wake(self) -> None: ...

        async def _main(self) -> None: ...

    # -- the user hook -----------------------------------------------------------------

    async def on_end(self) -> None:
        """Runs once when the behaviour's run has ended, for any reason: it finished, was
        killed or stopped, failed, or its agent stopped. Its state is final by then
        (`done`, `stopped` or `failed`, with `last_error` saying why a run failed) and
        `exit_code` is set. An exception it raises is logged and goes no further.
        """

    # -- ending a run --------------------------------------------------------------------

    def kill(self, exit_code: Any = None) -> None:
        """Ask the behaviour to end, from outside or from inside its own `run()`.

        The step running now finishes (a `receive()` or a backoff it waits in returns at
        once); no further step starts, the behaviour stops consuming and hands back its
        mailbox, its teardown and `on_end()` run, and it ends as `stopped`. Killing one
        that is not running does nothing; the first kill of a run sets its exit code.

        Args:
            exit_code: what `exit_code` reads afterwards (None: 0, as in SPADE).
        """
        if self.state != _RUNNING or self._run_end.final_state is not None:
            return
        self._run_end.killed = True
        self._end_run(_STOPPED, exit_code=EXIT_OK if exit_code is None else exit_code)

    def is_killed(self) -> bool:
        """Whether `kill()` was called during the current (or last) run.

        Returns:
            True once killed; False again when it is started anew.
        """
        return self._run_end.killed

    @property
    def exit_code(self) -> Any:
        """How the run ended: the code given to `kill()`; else 0 once it finished or was
        stopped, 1 once it failed. None while it runs unkilled, or before it first ran.
        """
        return self._run_end.exit_code

    async def join(self, timeout: float | None = None) -> None:
        """Wait until the behaviour's run has ended and `on_end()` has returned. Before
        the behaviour is started, this waits for a run to start and end.

        Args:
            timeout: seconds to wait at most (None: no limit).

        Raises:
            TimeoutError: it had not ended after `timeout` seconds.
            RuntimeError: called from the behaviour's own task, which would wait forever.
        """
        task = self.task
        if task is not None and task is asyncio.current_task():
            raise RuntimeError(f"behaviour {self.name} cannot join itself")
        await asyncio.wait_for(self._run_end.ended.wait(), timeout)

    def _end_run(self, state: str, error: str | None = None, exit_code: Any = None) -> None:
        """End this run once the current step returns, in `state` (done, stopped or
        failed), as a behaviour that ended itself: it gives up its consumer and mailbox.
        The first end asked for wins.

        Args:
            state: the state it ends in.
            error: why it failed (`last_error`), for a failed end.
            exit_code: its exit code (None: 0, or 1 for a failed end).
        """
        run_end = self._run_end
        if run_end.final_state is not None:
            return
        run_end.final_state = state
        run_end.error = error
        if exit_code is None:
            exit_code = EXIT_FAILED if state == _FAILED else EXIT_OK
        run_end.exit_code = exit_code
        self._stop = True
        self._wake()

    def _ends_itself(self) -> bool:
        """Whether this run was asked to end by itself (`kill()`, an FSM's end) rather than
        by `stop()`: then it releases its own consumer.
        """
        return self._run_end.final_state is not None

    # -- what Behaviour.start() and the run's task use --------------------------------

    def _begin_run(self) -> None:
        """A new run begins: nothing of the last run's end carries over. The record made
        before the first start is this run's, so a `join()` waiting on it wakes.
        """
        if self._run_end.begun:
            self._run_end = RunEnd()
        self._run_end.begun = True

    async def _live(self) -> None:
        """The run's task: the step loop (`_main`), then the end of the run, once."""
        run_end = self._run_end
        try:
            await self._main()
        finally:
            await self._conclude(run_end)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """Done callback of the run's task: a task cancelled before it began never ran
        `_live`, so its end is concluded here, in a task of its own.
        """
        run_end = self._run_end
        if task is self.task and not run_end.concluded and run_end.late is None:
            run_end.late = self.agent.loop.create_task(
                self._conclude(run_end), name=f"{self.name}.end"
            )

    async def _conclude(self, run_end: RunEnd) -> None:
        """The run has ended: settle its state and exit code, await `on_end()`, wake the
        joiners. Runs once per run.

        Args:
            run_end: the record of the run that ended.
        """
        if run_end.concluded:
            return
        run_end.concluded = True
        if run_end.final_state is not None and self.state in (_RUNNING, _DONE):
            self.state = run_end.final_state
            if run_end.error is not None:
                self.last_error = run_end.error
        elif self.state == _RUNNING and self._stop:
            self.state = _STOPPED  # stop() or the agent's stop: on_end sees the final state
        if run_end.exit_code is None:
            run_end.exit_code = EXIT_FAILED if self.state == _FAILED else EXIT_OK
        try:
            await self.on_end()
        except Exception:
            log.exception("%s: on_end failed", self.name)
        finally:
            run_end.ended.set()

    def _lifecycle_info(self) -> dict[str, Any]:
        """What `describe()` adds: whether it was killed and its exit code (its repr when
        that is no JSON value, so `describe()` stays sendable over RPC).
        """
        code = self._run_end.exit_code
        if not (code is None or isinstance(code, bool | int | float | str)):
            code = repr(code)
        return {"killed": self._run_end.killed, "exit_code": code}
