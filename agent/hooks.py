"""Hooks: the user's commands, run on the host around the session's events.

Each hook is given the event as one JSON object on its stdin (`hook_event_name`, `session_id`,
`cwd`, `step`, and what the event is about: `tool_name`, `tool_input`, `tool_output`,
`prompt`, `trigger`, `ending`, ...) and runs in the session's worktree with a time-out, with a
minimal environment: PATH, HOME, USER, LANG, APPRENTICE_HOOK_EVENT, APPRENTICE_SESSION_ID and
APPRENTICE_PROJECT_DIR; never the host's API keys.

Its exit status is its answer. 0: go on (the stdout of a `user_prompt_submit` hook is added
to the prompt). 2: `pre_tool_use` blocks the call and `user_prompt_submit` the prompt, with the
hook's stderr as the reason (the model reads it); `post_tool_use` adds its stderr to the
observation; a `stop` hook's stderr becomes a message that keeps the agent going (once per
run or chat turn). Any other status, a time-out or a command that cannot start is an error
that is reported and otherwise ignored (the call goes ahead), as in Claude Code.

Every run is a `hook_run` event. A repository hook whose script (a repository file its command
names) was changed during the session is not run: the model must not change what runs on the
host. A `pre_tool_use` hook skipped that way blocks the call. The bytes that were checked are
the ones that run: they are copied to a private host folder and the command names that copy
(so a script cannot be swapped between the check and the run; it runs in the worktree, but
files it loads next to itself are not there).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.hooks_config import ConfiguredHook, HookEvent, HooksConfig
from tools.base import Observation
from tools.host_trust import command_paths
from tools.sandbox.local_sandbox import local_environment
from tools.workspace_fs import WorkspaceFS
from trajectories.events import ErrorEvent, HookRun, ToolCall, scrub_text
from trajectories.replay import POST_HOOK_NOTE

if TYPE_CHECKING:
    from agent.session import Session

BLOCK_EXIT = 2
KEPT_CHARS = 4_000
"""What a hook run's event keeps of its stdout and stderr, and what the model may be told."""
KILL_WAIT_S = 5.0


@dataclass
class HookOutput:
    """What one hook process did."""

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    failed: str | None = None
    """Why it could not run at all."""
    duration_s: float = 0.0

    @property
    def words(self) -> str:
        """What it said for the session: its stderr, else its stdout."""
        return _clip((self.stderr or self.stdout).strip())


def _clip(text: str) -> str:
    return text if len(text) <= KEPT_CHARS else text[:KEPT_CHARS] + "\n[... cut]"


def run_hook_process(argv: list[str], payload: dict[str, Any], cwd: Path,
                     env: dict[str, str], timeout: float) -> HookOutput:
    """Run one hook: `payload` as JSON on stdin; killed with its process group after
    `timeout`. Never raises for what the hook does."""
    started = time.monotonic()
    try:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   errors="replace", start_new_session=True)
    except OSError as exc:
        return HookOutput(None, "", "", failed=f"cannot run {argv[0]}: {exc.strerror or exc}")
    data = json.dumps(payload, ensure_ascii=False)
    try:
        stdout, stderr = process.communicate(data, timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        try:
            stdout, stderr = process.communicate(timeout=KILL_WAIT_S)
        except subprocess.TimeoutExpired:  # a child kept the pipes open: give up on them
            stdout, stderr = "", ""
        timed_out = True
    return HookOutput(None if timed_out else process.returncode, stdout or "", stderr or "",
                      timed_out=timed_out, duration_s=time.monotonic() - started)


class HookRunner:
    """The hooks of one session, run at the points `Session` calls them."""

    def __init__(self, config: HooksConfig, workspace: Path):
        self.config = config
        self.workspace = Path(workspace)
        self.hooks = config.runnable()
        self._events = {hook.event for hook in self.hooks}
        self._stop_active = False

    @classmethod
    def none(cls) -> HookRunner:
        """A runner without hooks: every point is a no-op."""
        return cls(HooksConfig([], "", {}, True), Path("."))

    def has(self, event: HookEvent) -> bool:
        return event in self._events

    # -- the points of the loop, as the session calls them ---------------------------------

    def submit(self, session: Session, prompt: str) -> tuple[str, str | None]:
        """The prompt to send, and why the user_prompt_submit hooks block it, if they do."""
        if not self.has("user_prompt_submit"):
            return prompt, None
        prompt, reason = self.user_prompt_submit(session, prompt)
        return prompt, None if reason is None else \
            f"a user_prompt_submit hook blocked the prompt: {reason}"

    def refusal(self, session: Session, call: ToolCall) -> str | None:
        """The observation of a call a pre_tool_use hook blocks, or None to run it."""
        if not self.has("pre_tool_use"):
            return None
        reason = self.pre_tool_use(session, call)
        return None if reason is None else f"Blocked by a pre_tool_use hook: {reason}"

    def annotate(self, session: Session, call: ToolCall, observation: Observation) -> None:
        """Show the post_tool_use hooks the result; what they say is added to it."""
        if not self.has("post_tool_use") or observation.data.get("declined"):
            return
        note = self.post_tool_use(session, call, observation.output, observation.is_error)
        if note:
            observation.output = f"{observation.output}\n[post_tool_use hook: {note}]"
            observation.data[POST_HOOK_NOTE] = note

    def turn_started(self) -> None:
        """A run or chat turn begins: a stop hook may keep it going once."""
        self._stop_active = False

    def stop(self, session: Session, ending: str, summary: str | None) -> str | None:
        """A message that keeps the agent going, if a stop hook gives one and none has in this
        run or turn; the hooks still run (and see `stop_hook_active`) after that."""
        if not self.has("stop"):
            return None
        message = self.stop_hooks(session, ending, summary, self._stop_active)
        self._stop_active = self._stop_active or message is not None
        return message

    def pre_compact(self, session: Session, trigger: str) -> None:
        if not self.has("pre_compact"):
            return
        for hook, output in self._run(session, "pre_compact", {"trigger": trigger}):
            self._record_plain(session, hook, output)

    # -- each event's hooks ----------------------------------------------------------------

    def user_prompt_submit(self, session: Session, prompt: str) -> tuple[str, str | None]:
        """The prompt to send (with what the hooks added), and why it is blocked, if it is."""
        added = []
        for hook, output in self._run(session, "user_prompt_submit", {"prompt": prompt}):
            if self._blocks(output):
                return prompt, self._record(session, hook, output, "blocked",
                                            output.words or "no reason given")
            if output.exit_code == 0 and output.stdout.strip():
                added.append(self._record(session, hook, output, "feedback",
                                          _clip(output.stdout.strip())))
            else:
                self._record_plain(session, hook, output)
        return "\n\n".join([prompt, *added]), None

    def pre_tool_use(self, session: Session, call: ToolCall) -> str | None:
        """Why the call must not run, if a hook blocks it."""
        payload = {"tool_name": call.name, "tool_input": _arguments(call.arguments),
                   "tool_call_id": call.id}
        for hook, output in self._run(session, "pre_tool_use", payload, call):
            if output.failed and output.failed.startswith("skipped:"):
                return self._record(session, hook, output, "skipped", output.failed[9:],
                                    call.id)
            if self._blocks(output):
                return self._record(session, hook, output, "blocked",
                                    output.words or "no reason given", call.id)
            self._record_plain(session, hook, output, call.id)
        return None

    def post_tool_use(self, session: Session, call: ToolCall, output_text: str,
                      is_error: bool) -> str | None:
        """What the hooks add to the observation, if anything."""
        payload = {"tool_name": call.name, "tool_input": _arguments(call.arguments),
                   "tool_call_id": call.id, "tool_output": output_text, "is_error": is_error}
        notes = []
        for hook, output in self._run(session, "post_tool_use", payload, call):
            if self._blocks(output) and output.words:
                notes.append(self._record(session, hook, output, "feedback", output.words,
                                          call.id))
            else:
                self._record_plain(session, hook, output, call.id)
        return "\n".join(notes) or None

    def stop_hooks(self, session: Session, ending: str, summary: str | None,
                   active: bool) -> str | None:
        """A message that keeps the agent going, if a stop hook gives one (and none has in
        this run or turn: `active`)."""
        payload = {"ending": ending, "summary": summary, "stop_hook_active": active}
        for hook, output in self._run(session, "stop", payload):
            if self._blocks(output) and output.words and not active:
                return self._record(session, hook, output, "continue", output.words)
            if self._blocks(output):
                self._record(session, hook, output, "ok", "asked to go on again: not obeyed, "
                             "a stop hook keeps a run or turn going once")
            else:
                self._record_plain(session, hook, output)
        return None

    # -- running and recording -------------------------------------------------------------

    def _run(self, session: Session, event: HookEvent, details: dict[str, Any],
             call: ToolCall | None = None) -> list[tuple[ConfiguredHook, HookOutput]]:
        """Run the event's hooks in order (those matching the call's tool); stop after one
        that blocks."""
        done: list[tuple[ConfiguredHook, HookOutput]] = []
        for hook in self.hooks:
            if hook.event != event or not hook.hook.applies_to(call.name if call else None):
                continue
            copies, changed = self._checked_files(hook)
            if changed:
                output = HookOutput(None, "", "", failed=(
                    f"skipped: {', '.join(changed)} changed during the session, and a "
                    "repository hook runs only as it was trusted"))
            else:
                payload = {"hook_event_name": event, "session_id": session.id,
                           "cwd": str(self.workspace), "step": session.step, **details}
                with tempfile.TemporaryDirectory(prefix="apprentice-hook-") as private:
                    argv = staged_argv(hook.hook.command, copies, Path(private))
                    output = run_hook_process(argv, payload, self.workspace,
                                              self._environment(session, event),
                                              hook.hook.timeout)
            done.append((hook, output))
            if self._blocks(output) or (changed and event == "pre_tool_use"):
                break
        return done

    def _environment(self, session: Session, event: HookEvent) -> dict[str, str]:
        return {**local_environment(self.workspace), "APPRENTICE_HOOK_EVENT": event,
                "APPRENTICE_SESSION_ID": session.id,
                "APPRENTICE_PROJECT_DIR": str(self.workspace)}

    def _checked_files(self, hook: ConfiguredHook) -> tuple[dict[str, bytes], list[str]]:
        """For a repository hook: the bytes of the repository files it runs, read once, that
        match the trusted ones; and the files that do not."""
        if hook.source != "repository":
            return {}, []
        copies: dict[str, bytes] = {}
        changed = []
        for path in sorted(command_paths(hook.hook.command) & set(self.config.files)):
            try:
                # Never follows a link out, never blocks on a FIFO: the sandbox owns the tree.
                data: bytes | None = WorkspaceFS(self.workspace).read_bytes(path)
            except OSError:
                data = None
            if data is None or hashlib.sha256(data).hexdigest() != self.config.files[path]:
                changed.append(path)
            else:
                copies[path] = data
        return copies, changed

    @staticmethod
    def _blocks(output: HookOutput) -> bool:
        return output.exit_code == BLOCK_EXIT

    def _record_plain(self, session: Session, hook: ConfiguredHook, output: HookOutput,
                      call_id: str | None = None) -> None:
        """Record a run that changed nothing: ok, or an error (also shown as an error)."""
        if output.failed and output.failed.startswith("skipped:"):
            self._record(session, hook, output, "skipped", output.failed[9:], call_id)
        elif output.failed or output.timed_out or output.exit_code != 0:
            why = output.failed or (f"timed out after {hook.hook.timeout:g} s and was killed"
                                    if output.timed_out else f"exited with {output.exit_code}")
            tail = f": {output.words}" if output.words and not output.failed else ""
            self._record(session, hook, output, "error", f"{why}{tail}", call_id)
        else:
            self._record(session, hook, output, "ok", "", call_id)

    def _record(self, session: Session, hook: ConfiguredHook, output: HookOutput, outcome: Any,
                message: str, call_id: str | None = None) -> str:
        """Emit the run as a `hook_run` event (and errors also as an error); returns
        `message`."""
        message = scrub_text(message)
        session.emit(HookRun(
            session_id=session.id, step=session.step, hook_event=hook.event,
            command=hook.hook.describe(), source=hook.source, tool_call_id=call_id,
            outcome=outcome, message=message, exit_code=output.exit_code,
            timed_out=output.timed_out, stdout=scrub_text(_clip(output.stdout)),
            stderr=scrub_text(_clip(output.stderr)), duration_s=round(output.duration_s, 4)))
        if outcome in ("error", "skipped"):
            session.emit(ErrorEvent(session_id=session.id, step=session.step, message=(
                f"the {hook.event} hook `{hook.hook.describe()}` {message}")))
        return message


def staged_argv(command: str | list[str], copies: dict[str, bytes], folder: Path) -> list[str]:
    """The hook's argv with each checked repository file replaced by a private copy of the
    checked bytes in `folder` (`python3 hooks/guard.py` -> `python3 FOLDER/hooks/guard.py`)."""
    staged: dict[str, str] = {}
    for path, data in copies.items():
        copy = folder / path
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(data)
        copy.chmod(0o700)  # runnable as `./hooks/guard.sh`, readable by nobody else
        staged[path] = str(copy)
    if isinstance(command, list):
        return [staged.get(word.removeprefix("./"), word) for word in command]
    line = command
    for path, where in staged.items():
        if not re.fullmatch(r"[\w./-]+", where):  # a temp folder's name: never, but be sure
            where = shlex.quote(where)
        # The word itself (bare or quoted), not a longer path that ends or starts with it.
        word = rf"(?<![^\s'\"=;&|(<>])(\./)?{re.escape(path)}(?![^\s'\";&|)<>])"
        line = re.sub(word, where.replace("\\", "\\\\"), line)
    return ["bash", "-c", line]


def _arguments(raw: str) -> Any:
    """The call's arguments as an object, or as the text the model wrote if not JSON."""
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:
        return raw
