"""The agent loop: call the model, run its tool calls, emit every step as an event."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from agent import __version__
from agent.context import Compactor, ContextConfig
from agent.hooks import HookRunner
from agent.llm import ContextOverflowError, LLMClient, LLMReply, ModelError
from agent.prompts import NO_TOOL_CALL_NUDGE, system_prompt, task_message
from agent.repeat_guard import BLOCKED as REPEAT_BLOCKED
from agent.repeat_guard import RepeatGuard
from agent.tasks import Task
from agent.tool_grammar import PathChoices
from tools.base import Observation, ToolBox, ToolContext
from tools.files import LINES, READ
from tools.repo_map import render_repo_map
from tools.workspace import Workspace
from trajectories.events import (
    AssistantDelta,
    AssistantMessage,
    Checkpoint,
    Compaction,
    ErrorEvent,
    Event,
    ExitStatus,
    Finished,
    ModelCallStarted,
    PlanUpdated,
    SessionStarted,
    ToolCall,
    ToolCallStarted,
    ToolResult,
    TurnStatus,
    Usage,
    UserMessage,
    scrub_text,
    subagent_usage,
)
from trajectories.reader import apply_compaction, message_of

Ending = Literal["finished", "max_steps", "no_tool_call", "error", "interrupted", "answered"]
"""How `_loop` stopped: an exit status, or (in a chat turn) `answered`."""
Listener = Callable[[Event], None]
Approver = Callable[[str, str], "bool | str"]
"""Asked before each tool call with (name, JSON arguments): True runs it; False, or a reason as
text, declines it and the model is told so."""
MAX_NUDGES = 1
INTERRUPTED = "interrupted by the user"


class SessionInterrupted(Exception):
    """Raised inside a streamed model call to abandon it when the user interrupts."""


@dataclass
class SessionResult:
    """How an episode ended and what it cost."""

    exit_status: ExitStatus
    usage: Usage
    patch: str
    summary: str | None = None
    error: str | None = None


class Session:
    """One episode on one task. The context is built only from emitted events, so a recording
    of the events rebuilds exactly what the model saw."""

    def __init__(
        self,
        session_id: str,
        task: Task,
        llm: LLMClient,
        toolbox: ToolBox,
        ctx: ToolContext,
        workspace: Workspace,
        max_steps: int = 30,
        listeners: list[Listener] | None = None,
        sandbox_settings: dict[str, Any] | None = None,
        approve: Approver | None = None,
        context: ContextConfig | None = None,
        repeat_guard: bool = True,
        group: dict[str, Any] | None = None,
        hooks: HookRunner | None = None,
        notices: list[Event] | None = None,
        parent: dict[str, Any] | None = None,
        first_message: str | None = None,
        interrupted: threading.Event | None = None,
    ):
        self.id = session_id
        self.task = task
        self.llm = llm
        self.toolbox = toolbox
        self.ctx = ctx
        self.workspace = workspace
        self.max_steps = max_steps
        self.listeners = list(listeners or [])
        self.sandbox_settings = sandbox_settings or {}
        self.group = group or {}
        """The attempt group this episode belongs to (see `SessionStarted.group`)."""
        self.parent = parent or {}
        """For a subagent: the session and call that started it (see `SessionStarted.parent`)."""
        self.first_message = first_message
        """The first user message instead of the task's framing (a subagent's prompt)."""
        self.approve = approve
        self.hooks = hooks or HookRunner.none()
        """The user's hooks (`agent.hooks`), run around prompts, calls, compaction and stops."""
        self.notices = list(notices or [])
        """Events emitted once, after the header (or on restore): MCP servers' states,
        untrusted hooks."""
        self.messages: list[dict[str, Any]] = []
        self.step = 0
        self._calls_usage = Usage()
        self._interrupted = interrupted or threading.Event()
        """Set to stop; a subagent shares its parent's, so interrupting one stops both."""
        self._reported_left_out: set[str] = set()
        self._failing = False
        self._finished = False
        self._started = False
        self.context = context or ContextConfig()
        self.compactor = Compactor(self.context, llm, toolbox.schemas(), workspace.path)
        self._shown_lines: dict[str, set[int]] = {}
        """Lines of files the model was shown (views), from the events: the edits it may make."""
        self.repeat_guard = RepeatGuard(
            (name for name, tool in toolbox.tools.items() if tool.read_only),
            (name for name, tool in toolbox.tools.items() if tool.error_changes_nothing)) \
            if repeat_guard else None

    def set_llm(self, llm: LLMClient) -> None:
        """Switch model from the next call on; the context is re-measured for its window."""
        self.llm = llm
        self.compactor.use_model(llm)

    def emit(self, event: Event) -> None:
        self._absorb(event)
        for listener in self.listeners:
            if not self._failing:
                listener(event)
                continue
            try:  # recording how a run failed: one broken listener must not stop the others
                listener(event)
            except Exception:  # noqa: S112 - the original failure is what propagates
                continue

    def _record_failure(self, exc: Exception, finish: bool) -> None:
        """Record an unexpected failure (a listener, a bug) as a fatal error event and, for a
        whole run, `finished` with status `error`, before the exception propagates."""
        self._failing = True
        message = scrub_text(f"the session failed: {type(exc).__name__}: {exc}")
        try:
            self.emit(ErrorEvent(session_id=self.id, step=self.step, message=message,
                                 fatal=True))
            if finish:
                self._finish("error", None, message)
        except Exception:  # noqa: S110 - the original failure is what propagates
            pass
        finally:
            self._failing = False

    def _absorb(self, event: Event) -> None:
        """Fold an event into the context and the counters (emitted now or replayed)."""
        if isinstance(event, Compaction):
            self.messages = apply_compaction(self.messages, event)
        message = message_of(event)
        if message is not None:
            self.messages.append(message)
        self.compactor.observe(event)
        if self.repeat_guard is not None:
            self.repeat_guard.observe(event)
        if isinstance(event, ToolResult) and not event.is_error and event.data:
            shown, lines = event.data.get(READ), event.data.get(LINES)
            if isinstance(shown, str) and isinstance(lines, list) and len(lines) == 2:
                self._shown_lines.setdefault(shown, set()).update(range(lines[0], lines[1] + 1))
        if isinstance(event, AssistantMessage | Compaction):
            self._calls_usage += event.usage
        elif isinstance(event, ToolResult) and "subagent" in event.data:
            self._calls_usage += subagent_usage(event.data["subagent"])

    @property
    def usage(self) -> Usage:
        """Steps taken so far, and the tokens and cost of every model call (summaries too)."""
        return Usage(steps=self.step) + self._calls_usage

    def interrupt(self) -> None:
        """Stop the running step (thread-safe): a streamed model call at its next token, a running
        command at once (where the sandbox can kill it), then the loop."""
        self._interrupted.set()
        stop_command = getattr(self.ctx.sandbox, "interrupt", None)
        if stop_command is not None:
            stop_command()

    def run(self) -> SessionResult:
        """Run until finish, the step limit, a stalled model or a fatal error."""
        try:
            self.start()
            opening = self.first_message or task_message(self.task.problem_statement)
            prompt, blocked = self.hooks.submit(self, opening)
            if blocked is not None:
                ending, summary, error = self._fatal(blocked)
            else:
                self.emit(UserMessage(session_id=self.id, content=scrub_text(prompt),
                                      origin="task"))
                ending, summary, error = self._loop()
            return self._finish("no_tool_call" if ending == "answered" else ending, summary,
                                error)
        except Exception as exc:
            self._record_failure(exc, finish=not self._finished)
            raise

    def send(self, text: str) -> TurnStatus:
        """One chat turn: append the user's message, then loop until the model answers without a
        tool call, finishes, takes `max_steps` more steps, fails or is interrupted. Returns how
        the turn ended ("answered", "finished", "max_steps", "interrupted" or "error")."""
        self.start()
        self._interrupted.clear()
        try:
            text, blocked = self.hooks.submit(self, text)
            if blocked is not None:
                self.emit(ErrorEvent(session_id=self.id, step=self.step, message=blocked))
                return "error"
            self.emit(UserMessage(session_id=self.id, step=self.step, content=scrub_text(text),
                                  origin="user"))
            ending, _, _ = self._loop(chat=True)
        except Exception as exc:
            self._record_failure(exc, finish=False)
            raise
        return "answered" if ending == "no_tool_call" else ending

    def end(self, status: ExitStatus = "quit") -> SessionResult:
        """Close an interactive session: a last checkpoint, the patch, the `finished` event."""
        return self._finish(status, None, None)

    def restore(self, events: Iterable[Event]) -> None:
        """Continue a recorded session: rebuild the context and counters from its events (not
        re-emitted). Tool calls the recording left unanswered get a 'not run' result."""
        self._started = True
        self.messages = []
        answered: set[str] = set()
        pending: list[ToolCall] = []
        for event in events:
            if isinstance(event, SessionStarted):
                self.messages = [{"role": "system", "content": event.system_prompt}]
            self._absorb(event)
            if isinstance(event, AssistantMessage):
                pending = event.tool_calls
            elif isinstance(event, ToolResult):
                answered.add(event.tool_call_id)
            self.step = max(self.step, event.step)
        self._emit_notices()
        for call in pending:
            if call.id not in answered:
                self.emit(ToolResult(session_id=self.id, step=self.step, tool_call_id=call.id,
                                     name=call.name, is_error=True,
                                     output="Not run: the session ended before this call ran."))

    def start(self) -> None:
        """Emit the header (system prompt, tools, task) once; `run` and `send` call it."""
        if self._started:
            return
        self._started = True
        self.ctx.task_text = self.ctx.task_text or self.task.problem_statement
        repo_map = render_repo_map(self.workspace.path, self.context.repo_map_tokens,
                                   mentioned=self.task.problem_statement)
        prompt = system_prompt(self.workspace.path, self.workspace.repo_path.name,
                               self.task.test_command, repo_map, tools=self.toolbox.tools)
        self.messages = [{"role": "system", "content": prompt}]
        self.emit(SessionStarted(
            session_id=self.id, software_version=__version__, task=self.task.model_dump(),
            model=self.llm.config.model,
            model_params=self.llm.config.model_dump(exclude={"api_key"}),
            system_prompt=prompt, tools=self.toolbox.schemas(), repo=str(self.workspace.repo_path),
            base_commit=self.workspace.base_commit, branch=self.workspace.branch,
            sandbox=self.sandbox_settings, group=self.group, parent=self.parent,
        ))
        self._emit_notices()

    def _emit_notices(self) -> None:
        notices, self.notices = self.notices, []
        for event in notices:
            self.emit(event.model_copy(update={"session_id": self.id, "step": self.step}))

    def _keep_going(self, ending: str, summary: str | None) -> bool:
        """True if a stop hook keeps the agent going (once per run or turn); its message is
        then the last user turn."""
        message = self.hooks.stop(self, ending, summary)
        if message is not None:
            self.emit(UserMessage(session_id=self.id, step=self.step,
                                  content=scrub_text(message), origin="hook"))
        return message is not None

    def _loop(self, chat: bool = False) -> tuple[Ending, str | None, str | None]:
        """Steps until an end; in `chat`, a reply without tool calls ends the turn."""
        nudges = 0
        self.hooks.turn_started()
        limit = self.step + self.max_steps
        while self.step < limit:
            if self._interrupted.is_set():
                return self._interrupted_status()
            self.step += 1
            try:
                reply = self._call_model()
            except SessionInterrupted:
                return self._interrupted_status()
            except ModelError as exc:
                return self._fatal(str(exc))
            except Exception as exc:  # a bug on the model path must still end the run cleanly
                return self._fatal(f"the model call failed unexpectedly: "
                                   f"{type(exc).__name__}: {exc}")
            if not reply.tool_calls:
                if chat or nudges >= MAX_NUDGES:
                    if self._keep_going("answered" if chat else "no_tool_call", reply.content):
                        continue
                    return ("answered" if chat else "no_tool_call"), reply.content, None
                nudges += 1
                self.emit(UserMessage(session_id=self.id, step=self.step,
                                      content=NO_TOOL_CALL_NUDGE, origin="nudge"))
                continue
            nudges = 0
            summary = self._run_tool_calls(reply.tool_calls)
            self._checkpoint()
            if summary is not None:
                if self._keep_going("finished", summary):
                    continue
                return "finished", summary, None
        return "max_steps", None, None

    def _fatal(self, message: str) -> tuple[Ending, str | None, str | None]:
        message = scrub_text(message)
        self.emit(ErrorEvent(session_id=self.id, step=self.step, message=message, fatal=True))
        return "error", None, message

    def _wait_or_stop(self, seconds: float) -> None:
        """Wait before a retry; an interrupt ends the wait (and the call) at once."""
        if self._interrupted.wait(seconds):
            raise SessionInterrupted(INTERRUPTED)

    def _on_retry(self, message: str) -> None:
        """A transient model failure is shown (not fatal) before the client waits and retries."""
        self.emit(ErrorEvent(session_id=self.id, step=self.step, message=scrub_text(message)))
        if self._interrupted.is_set():
            raise SessionInterrupted(INTERRUPTED)

    def _interrupted_status(self) -> tuple[Ending, str | None, str | None]:
        self.emit(ErrorEvent(session_id=self.id, step=self.step, message=INTERRUPTED))
        return "interrupted", None, None

    def _on_delta(self, text: str) -> None:
        if self._interrupted.is_set():
            raise SessionInterrupted(INTERRUPTED)
        self.emit(AssistantDelta(session_id=self.id, step=self.step, text=text))

    def compact(self, reason: Literal["threshold", "requested"] = "requested") -> Compaction | None:
        """Compact the context now (`/compact`; automatic past the threshold): emits and returns
        the `compaction` event, or None when there was nothing to cut."""
        self.hooks.pre_compact(self, reason)
        event = self.compactor.compact(self.messages, self.id, self.step, reason)
        if event is not None:
            self.emit(event)
        return event

    def _compact_if_needed(self) -> None:
        try:
            if self.compactor.needs_compaction(self.messages):
                self.compact("threshold")
        except Exception as exc:  # a compaction bug must not end the episode
            self.emit(ErrorEvent(session_id=self.id, step=self.step,
                                 message=f"compaction failed: {type(exc).__name__}: {exc}"))

    def _call_model(self) -> AssistantMessage:
        self._compact_if_needed()
        try:
            reply = self._request()
        except ContextOverflowError as exc:
            # Our count of the context was under the provider's: cut it and ask once more.
            if self.compact("requested") is None:
                raise
            self.emit(ErrorEvent(session_id=self.id, step=self.step, message=scrub_text(
                f"{exc}; compacted the context and asked again")))
            reply = self._request()
        event = AssistantMessage(
            session_id=self.id, step=self.step, content=reply.content,
            tool_calls=reply.tool_calls, prompt_tokens=reply.usage.prompt_tokens,
            completion_tokens=reply.usage.completion_tokens, cost_usd=reply.usage.cost_usd,
            latency_s=round(reply.latency_s, 4), token_ids=reply.token_ids,
        )
        self.emit(event)
        return event

    def _request(self) -> LLMReply:
        self.emit(ModelCallStarted(session_id=self.id, step=self.step,
                                   prompt_messages=len(self.messages)))
        return self.llm.complete(
            self.messages, self.toolbox.schemas(), wait=self._wait_or_stop,
            on_delta=self._on_delta,
            on_retry=self._on_retry,
            paths=self._path_choices(),
        )

    def _path_choices(self) -> PathChoices | None:
        """The workspace's paths as they are now, for a model whose path arguments are kept to
        them (a local one)."""
        if not self.llm.constrains_paths or not self.toolbox.path_arguments():
            return None
        return PathChoices.of_workspace(self.workspace.path, self.toolbox, self._shown_lines,
                                        with_starts=self.llm.config.tool_grammar == "edits")

    def _run_tool_calls(self, tool_calls: list[ToolCall]) -> str | None:
        """Run each call in order; return the summary if one of them was finish."""
        summary = None
        for call in tool_calls:
            if summary is not None:
                observation = Observation("Not run: the episode already finished.", True)
            elif self._interrupted.is_set():
                observation = Observation(f"Not run: {INTERRUPTED}.", True)
            elif refusal := self._repeat_refusal(call):
                observation = Observation(refusal, True, data={REPEAT_BLOCKED: True})
            elif blocked := self.hooks.refusal(self, call):
                observation = Observation(blocked, True, data={"blocked_by_hook": True})
            else:
                self.emit(ToolCallStarted(session_id=self.id, step=self.step,
                                          tool_call_id=call.id, name=call.name,
                                          arguments=call.arguments))
                self.ctx.tool_call_id = call.id
                observation = self._run_tool(call.name, call.arguments)
                self.hooks.annotate(self, call, observation)
            self.emit(ToolResult(
                session_id=self.id, step=self.step, tool_call_id=call.id, name=call.name,
                output=scrub_text(observation.output), is_error=observation.is_error,
                duration_s=round(observation.duration_s, 4),
                data=observation.data,
            ))
            if observation.plan is not None and not observation.is_error:
                self.emit(PlanUpdated(session_id=self.id, step=self.step,
                                      items=observation.plan))
            if observation.finished:
                summary = observation.data.get("summary", "")
        return summary

    def _repeat_refusal(self, call: ToolCall) -> str | None:
        return self.repeat_guard.refusal(call.name, call.arguments) if self.repeat_guard \
            else None

    def _run_tool(self, name: str, arguments: str) -> Observation:
        started = time.monotonic()
        try:
            verdict = self.approve(name, arguments) if self.approve else True
            if verdict is not True:
                reason = f": {verdict}" if isinstance(verdict, str) and verdict else "."
                observation = Observation(f"The user declined this {name} call{reason}", True,
                                          data={"declined": True})
            else:
                observation = self.toolbox.call(name, arguments, self.ctx)
        except Exception as exc:  # a bug in a tool must not end the episode
            message = f"Error: the {name} tool failed unexpectedly: {type(exc).__name__}: {exc}"
            self.emit(ErrorEvent(session_id=self.id, step=self.step, message=message))
            observation = Observation(message, True)
        observation.duration_s = time.monotonic() - started
        return observation

    def _checkpoint(self) -> str | None:
        """Commit the turn's changes; returns why it failed (reported as an error event)."""
        try:
            commit = self.workspace.checkpoint(f"apprentice: checkpoint after step {self.step}")
        except Exception as exc:  # git trouble is reported; the episode goes on
            message = scrub_text(f"checkpoint failed: {exc}")
            self.emit(ErrorEvent(session_id=self.id, step=self.step, message=message))
            return message
        left_out = [p for p in self.workspace.left_out if p not in self._reported_left_out]
        if left_out:
            self._reported_left_out.update(left_out)
            self.emit(ErrorEvent(session_id=self.id, step=self.step, message=scrub_text(
                "left out of the checkpoint and the patch (git refuses these paths): "
                + ", ".join(left_out))))
        if commit:
            self.emit(Checkpoint(session_id=self.id, step=self.step, commit=commit))
        return None

    def _finish(self, status: ExitStatus, summary: str | None,
                error: str | None) -> SessionResult:
        patch = ""
        failed = self._checkpoint()
        try:
            patch = self.workspace.patch()
        except Exception as exc:
            failed = scrub_text(f"could not compute the patch: {exc}")
            self.emit(ErrorEvent(session_id=self.id, step=self.step, message=failed, fatal=True))
        if failed and not patch and status != "error":  # never an empty patch that looks
            status, error = "error", failed  # like a normal end when the work was not saved

        usage = self.usage
        result = SessionResult(status, usage, patch, summary, error)
        self._finished = True
        self.emit(Finished(
            session_id=self.id, step=self.step, exit_status=status, summary=summary, patch=patch,
            steps=usage.steps, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, cost_usd=usage.cost_usd,
        ))
        return result
