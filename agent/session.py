"""The agent loop: call the model, run its tool calls, emit every step as an event."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent import __version__
from agent.llm import LLMClient, ModelError
from agent.prompts import NO_TOOL_CALL_NUDGE, system_prompt, task_message
from agent.tasks import Task
from tools.base import Observation, ToolBox, ToolContext
from tools.workspace import Workspace
from trajectories.events import (
    AssistantDelta,
    AssistantMessage,
    Checkpoint,
    ErrorEvent,
    Event,
    Finished,
    ModelCallStarted,
    PlanUpdated,
    SessionStarted,
    ToolCallStarted,
    ToolResult,
    UserMessage,
)
from trajectories.reader import message_of

Listener = Callable[[Event], None]
MAX_NUDGES = 1


@dataclass
class SessionResult:
    """How an episode ended and what it cost."""

    exit_status: str
    steps: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
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
        self.messages: list[dict[str, Any]] = []
        self.step = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0
        self._interrupted = threading.Event()

    def emit(self, event: Event) -> None:
        message = message_of(event)
        if message is not None:
            self.messages.append(message)
        if isinstance(event, AssistantMessage):
            self.prompt_tokens += event.prompt_tokens
            self.completion_tokens += event.completion_tokens
            self.cost_usd += event.cost_usd
        for listener in self.listeners:
            listener(event)

    def interrupt(self) -> None:
        """Stop after the current step (thread-safe)."""
        self._interrupted.set()

    def run(self) -> SessionResult:
        """Run until finish, the step limit, a stalled model or a fatal error."""
        prompt = system_prompt(self.workspace.path, self.workspace.repo_path.name,
                               self.task.test_command)
        self.messages = [{"role": "system", "content": prompt}]
        self.emit(SessionStarted(
            session_id=self.id, software_version=__version__, task=self.task.model_dump(),
            model=self.llm.config.model,
            model_params=self.llm.config.model_dump(exclude={"api_key"}),
            system_prompt=prompt, tools=self.toolbox.schemas(), repo=str(self.workspace.repo_path),
            base_commit=self.workspace.base_commit, branch=self.workspace.branch,
            sandbox=self.sandbox_settings,
        ))
        self.emit(UserMessage(session_id=self.id, content=task_message(
            self.task.problem_statement), origin="task"))
        status, summary, error = self._loop()
        return self._finish(status, summary, error)

    def _loop(self) -> tuple[str, str | None, str | None]:
        nudges = 0
        while self.step < self.max_steps:
            if self._interrupted.is_set():
                return "interrupted", None, None
            self.step += 1
            try:
                reply = self._call_model()
            except ModelError as exc:
                self.emit(ErrorEvent(session_id=self.id, step=self.step, message=str(exc),
                                     fatal=True))
                return "error", None, str(exc)
            if not reply.tool_calls:
                if nudges >= MAX_NUDGES:
                    return "no_tool_call", reply.content, None
                nudges += 1
                self.emit(UserMessage(session_id=self.id, step=self.step,
                                      content=NO_TOOL_CALL_NUDGE, origin="nudge"))
                continue
            nudges = 0
            summary = self._run_tool_calls(reply.tool_calls)
            self._checkpoint()
            if summary is not None:
                return "finished", summary, None
        return "max_steps", None, None

    def _call_model(self) -> AssistantMessage:
        self.emit(ModelCallStarted(session_id=self.id, step=self.step,
                                   prompt_messages=len(self.messages)))
        reply = self.llm.complete(
            self.messages, self.toolbox.schemas(),
            on_delta=lambda text: self.emit(AssistantDelta(session_id=self.id, step=self.step,
                                                           text=text)),
        )
        event = AssistantMessage(
            session_id=self.id, step=self.step, content=reply.content,
            tool_calls=reply.tool_calls, prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens, cost_usd=reply.cost_usd,
            latency_s=round(reply.latency_s, 4), token_ids=reply.token_ids,
        )
        self.emit(event)
        return event

    def _run_tool_calls(self, tool_calls: list[dict[str, Any]]) -> str | None:
        """Run each call in order; return the summary if one of them was finish."""
        summary = None
        for call in tool_calls:
            name, arguments = call["function"]["name"], call["function"]["arguments"]
            if summary is not None:
                observation = Observation("Not run: the episode already finished.", True)
            else:
                self.emit(ToolCallStarted(session_id=self.id, step=self.step,
                                          tool_call_id=call["id"], name=name,
                                          arguments=arguments))
                observation = self._run_tool(name, arguments)
            self.emit(ToolResult(
                session_id=self.id, step=self.step, tool_call_id=call["id"], name=name,
                output=observation.output, is_error=observation.is_error,
                duration_s=round(observation.data.pop("_duration_s", 0.0), 4),
                data=observation.data,
            ))
            if name == "todo" and not observation.is_error:
                self.emit(PlanUpdated(session_id=self.id, step=self.step,
                                      items=observation.data.get("items", [])))
            if observation.finished:
                summary = observation.data.get("summary", "")
        return summary

    def _run_tool(self, name: str, arguments: str) -> Observation:
        started = time.monotonic()
        try:
            observation = self.toolbox.call(name, arguments, self.ctx)
        except Exception as exc:  # a bug in a tool must not end the episode
            message = f"Error: the {name} tool failed unexpectedly: {type(exc).__name__}: {exc}"
            self.emit(ErrorEvent(session_id=self.id, step=self.step, message=message))
            observation = Observation(message, True)
        observation.data["_duration_s"] = time.monotonic() - started
        return observation

    def _checkpoint(self) -> None:
        try:
            commit = self.workspace.checkpoint(f"apprentice: checkpoint after step {self.step}")
        except Exception as exc:  # git trouble is reported, not fatal
            self.emit(ErrorEvent(session_id=self.id, step=self.step,
                                 message=f"checkpoint failed: {exc}"))
            return
        if commit:
            self.emit(Checkpoint(session_id=self.id, step=self.step, commit=commit))

    def _finish(self, status: str, summary: str | None, error: str | None) -> SessionResult:
        patch = ""
        try:
            self._checkpoint()
            patch = self.workspace.patch()
        except Exception as exc:
            self.emit(ErrorEvent(session_id=self.id, step=self.step,
                                 message=f"could not compute the patch: {exc}"))
        result = SessionResult(status, self.step, self.prompt_tokens, self.completion_tokens,
                               self.cost_usd, patch, summary, error)
        self.emit(Finished(
            session_id=self.id, step=self.step, exit_status=status, summary=summary, patch=patch,
            steps=self.step, prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens, cost_usd=self.cost_usd,
        ))
        return result
