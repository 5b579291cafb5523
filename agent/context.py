"""Context compaction: keep every model call inside the window without losing the plot.

Each request is measured in tokens (the local model's own tokenizer, else litellm's counter)
against the model's window. Past `threshold` of it the context is compacted, in stages, aiming
at `target`:

1. mask old tool outputs, oldest first: each becomes a one-line placeholder saying what was cut
   and how large it was (the latest `keep_outputs` stay whole while they fit in `keep_recent`
   of the window, the very latest always);
2. summarise the older turns with the model (goal, decisions, plan state, files touched, what was
   tried and failed, next steps), keeping the latest turns verbatim; a summary costs a model
   call, so it is made when masking is not enough to get under the threshold, or when it frees
   at least `keep_recent` of the window;
3. if the summary call fails, drop the older turns instead; as a last resort (one output larger
   than the window) mask or shorten whatever is not an invariant, so that no request is sent
   over the threshold.

The invariants survive every stage verbatim: the system prompt (which holds the project's rules),
the task message, the latest user message, the rules file (added when the system prompt lacks
it) and the current todo list. A cut never falls between a tool call and its result.

The compactor never edits a context: it returns a `Compaction` event, which the session emits and
`trajectories.reader.apply_compaction` applies, so a recording rebuilds what the model saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.episode_config import ContextConfig
from agent.llm import LLMClient
from agent.prompts import MAX_RULES_CHARS, RULES_FILES
from agent.token_counter import TokenCounter, context_window
from tools.workspace_fs import WorkspaceFS
from trajectories.events import (
    Compaction,
    Event,
    PlanUpdated,
    SessionStarted,
    ToolCall,
    Usage,
    UserMessage,
)

MASK_PREFIX = "[output cut to save context:"
COMPACTED_PREFIX = "[Context compacted:"
MIN_MASKED_TOKENS = 40
TRANSCRIPT_ITEM_CHARS = 2_000

SUMMARY_SYSTEM = """You compact the history of a coding agent's session so that the agent can \
continue in a fresh context. You only write the summary; you do not continue the work."""

SUMMARY_REQUEST = """Here is the older part of the session (the latest turns stay visible to \
the agent, so do not repeat them):

{transcript}

Summarise it under exactly these headings, as short bullet points:
## Goal
## Decisions
## Plan state
## Files touched
## Tried and failed
## Next steps
Keep exact file paths, names, commands and error messages. Invent nothing."""


@dataclass
class Invariants:
    """What every compaction keeps verbatim, tracked from the event stream."""

    task: str | None = None
    latest_user: str | None = None
    todo: list[dict[str, Any]] = field(default_factory=list)

    def observe(self, event: Event) -> None:
        if isinstance(event, UserMessage) and event.origin in ("task", "user"):
            self.latest_user = event.content
            if event.origin == "task":
                self.task = event.content
        elif isinstance(event, PlanUpdated):
            self.todo = list(event.items)
        elif isinstance(event, SessionStarted):
            self.task = self.latest_user = None
            self.todo = []


@dataclass(eq=False)
class _Slot:
    """One message of the context being built: where it came from and what it now says."""

    message: dict[str, Any]
    source: int | None = None
    changed: bool = False
    pinned: bool = False


class Compactor:
    """Decides when a context is too long and plans its compaction as a `Compaction` event."""

    def __init__(self, config: ContextConfig, llm: LLMClient, tools: list[dict[str, Any]],
                 workspace: Path | None = None, counter: TokenCounter | None = None):
        self.config = config
        self.tools = tools
        self.use_model(llm, counter)
        self.rules = _rules_file(workspace) if workspace else None
        self.invariants = Invariants()

    def use_model(self, llm: LLMClient, counter: TokenCounter | None = None) -> None:
        """Measure and summarise with `llm` from now on (its window and tokenizer)."""
        self.llm = llm
        self.window = context_window(llm.config.model, self.config.context_window)
        self.limit = int(self.window * self.config.threshold)
        self.target = int(self.window * self.config.target)
        self.counter = counter or TokenCounter(llm.config.model, llm.config.adapter)

    def observe(self, event: Event) -> None:
        self.invariants.observe(event)

    def tokens(self, messages: list[dict[str, Any]]) -> int:
        return self.counter.count(messages, self.tools)

    def needs_compaction(self, messages: list[dict[str, Any]]) -> bool:
        return self.tokens(messages) > self.limit

    def compact(self, messages: list[dict[str, Any]], session_id: str, step: int = 0,
                reason: Literal["threshold", "requested"] = "threshold") -> Compaction | None:
        """The compaction of `messages` (None when there is nothing to cut). `requested` masks
        and summarises whatever it can; `threshold` stops at the first stage that is enough."""
        if len(messages) < 2:
            return None
        forced = reason == "requested"
        before = self.tokens(messages)
        slots = [_Slot(dict(m), i) for i, m in enumerate(messages)]
        self._pin(slots)
        stage: Literal["masked", "summarised", "dropped"] = "masked"
        summary, error, usage = None, None, Usage()
        self._mask(slots, before, forced)
        total = self._total(slots)
        recent = int(self.window * self.config.keep_recent)
        if forced or total > self.target:
            cut = self._cut(slots, 0 if forced else recent)
            head = [s for s in slots[1:cut] if not s.pinned]
            # A summary costs a model call: worth it when asked for, when the context is still
            # over the threshold, or when it frees at least `keep_recent` of the window.
            if head and (forced or total > self.limit or sum(
                    self.counter.count_message(s.message) for s in head) >= recent):
                summary, error, usage = self._summarise(head)
                stage = "summarised" if summary else "dropped"
                slots = self._replace_head(slots, cut, head, summary, error)
        self._fit(slots)
        if len(slots) == len(messages) and not any(s.changed or s.source is None for s in slots):
            return None
        after = self.tokens([s.message for s in slots])
        kept = {s.source for s in slots if s.source is not None}
        return Compaction(
            session_id=session_id, step=step, reason=reason, stage=stage,
            context=[_item(s) for s in slots],
            removed=[i for i in range(len(messages)) if i not in kept],
            masked=[s.source for s in slots if s.changed and s.source is not None
                    and s.message.get("role") == "tool"],
            summary=summary, summary_error=error, tokens_before=before, tokens_after=after,
            window=self.window, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, cost_usd=usage.cost_usd,
        )

    def _pin(self, slots: list[_Slot]) -> None:
        """Mark the invariants: the system prompt, the task and the latest user message."""
        slots[0].pinned = slots[0].message.get("role") == "system"
        for text, pick in ((self.invariants.task, min), (self.invariants.latest_user, max)):
            found = [i for i, s in enumerate(slots) if s.message.get("role") == "user"
                     and s.message.get("content") == text]
            if text is not None and found:
                slots[pick(found)].pinned = True

    def _total(self, slots: list[_Slot]) -> int:
        return self.tokens([s.message for s in slots])

    def _mask(self, slots: list[_Slot], total: int, forced: bool) -> None:
        """Stage 1: placeholders for old tool outputs, oldest first, until under target. The
        latest `keep_outputs` stay whole while they fit in `keep_recent` of the window (the
        very latest one always)."""
        tool_slots = [s for s in slots if s.message.get("role") == "tool"]
        kept, room = 0, int(self.window * self.config.keep_recent)
        for slot in reversed(tool_slots[-self.config.keep_outputs:] if
                             self.config.keep_outputs else []):
            room -= self.counter.count_message(slot.message)
            if kept and room < 0:
                break
            kept += 1
        candidates = tool_slots[:len(tool_slots) - kept]
        calls = _calls_by_id(slots)
        for slot in candidates:
            if not forced and total <= self.target:
                break
            content = str(slot.message.get("content") or "")
            size = self.counter.count_message(slot.message)
            if content.startswith(MASK_PREFIX) or size < MIN_MASKED_TOKENS:
                continue
            slot.message["content"] = placeholder(calls.get(str(slot.message.get("tool_call_id"))),
                                                  content)
            slot.changed = True
            total -= size - self.counter.count_message(slot.message)

    def _cut(self, slots: list[_Slot], budget: int) -> int:
        """Index where the verbatim tail starts: a message that is not a tool result, at or
        before an assistant message still waiting for results, with the tail under `budget`
        tokens when possible (else only the latest turn)."""
        boundaries = {i for i, s in enumerate(slots) if i > 0 and s.message.get("role") != "tool"}
        if not boundaries:
            return len(slots)
        latest = min(max(boundaries), _pending_call(slots))
        tail, cut = 0, latest
        sizes = [self.counter.count_message(s.message) for s in slots]
        for i in range(len(slots) - 1, 0, -1):
            tail += sizes[i]
            if tail > budget:
                break
            if i in boundaries and i <= latest:
                cut = i
        return cut

    def _summarise(self, head: list[_Slot]) -> tuple[str | None, str | None, Usage]:
        """Stage 2: the model's structured summary of `head`, or the error that stopped it."""
        max_tokens = min(self.config.summary_tokens, self.window // 6)
        request = self._summary_request([s.message for s in head], self.window - max_tokens)
        if request is None:
            return None, "the window is too small to summarise in", Usage()
        config = self.llm.config.model_copy(
            update={"max_tokens": max_tokens, "stream": False, "tool_choice": None})
        try:
            reply = LLMClient(config).complete(request, [])
        except Exception as exc:  # any failure falls back to dropping the turns
            return None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}", Usage()
        usage = reply.usage
        text = (reply.content or "").strip()
        if not text:
            return None, "the model returned an empty summary", usage
        return text, None, usage

    def _summary_request(self, head: list[dict[str, Any]],
                         room: int) -> list[dict[str, Any]] | None:
        """The summariser's messages, within `room` tokens: the oldest turns go first when the
        head is too long (earlier summaries stay)."""
        def request(items: list[str]) -> list[dict[str, Any]]:
            transcript = "\n\n".join(items)
            return [{"role": "system", "content": SUMMARY_SYSTEM},
                    {"role": "user", "content": SUMMARY_REQUEST.format(transcript=transcript)}]

        items = [_render(m) for m in head]
        keep = [str(m.get("content") or "").startswith(COMPACTED_PREFIX) for m in head]
        sizes = [self.counter.count_message({"role": "user", "content": t}) for t in items]
        fixed = self.counter.count(request([]), [])
        while items:
            if fixed + sum(sizes) <= room and self.counter.count(request(items), []) <= room:
                return request(items)
            index = next((i for i, k in enumerate(keep) if not k), 0)
            del items[index], keep[index], sizes[index]
        return None

    def _replace_head(self, slots: list[_Slot], cut: int, head: list[_Slot],
                      summary: str | None, error: str | None) -> list[_Slot]:
        """The system prompt, the task, one message standing for `head`, the latest user
        message (when it was in `head`'s span), then the tail."""
        tokens = sum(self.counter.count_message(s.message) for s in head)
        if summary:
            note = (f"{COMPACTED_PREFIX} {len(head)} earlier messages (about {tokens} tokens) "
                    "were summarised; their tool outputs are gone, so view files or run commands "
                    f"again when you need the details.]\n\n{summary}")
        else:
            note = (f"{COMPACTED_PREFIX} {len(head)} earlier messages (about {tokens} tokens) "
                    f"were dropped because no summary could be made ({error}). View files or "
                    "run commands again when you need what they said.]")
        note += self._invariant_notes(slots[0].message)
        pinned = [s for s in slots[:cut] if s.pinned]
        first = [s for s in pinned[:1] if s.source == 0 and s.message.get("role") == "system"]
        task = [s for s in pinned if s not in first
                and s.message.get("content") == self.invariants.task][:1]
        later = [s for s in pinned if s not in first and s not in task]
        stand_in = _Slot({"role": "user", "content": note}, pinned=True)
        return [*first, *task, stand_in, *later, *slots[cut:]]

    def _invariant_notes(self, system: dict[str, Any]) -> str:
        notes = ""
        if self.rules and self.rules[1].strip() not in str(system.get("content") or ""):
            notes += f"\n\nThe project's rules ({self.rules[0]}):\n{self.rules[1].strip()}"
        if self.invariants.todo:
            marks = {"pending": "[ ]", "in_progress": "[~]", "completed": "[x]"}
            lines = [f"{marks.get(i.get('status', ''), '[ ]')} {i.get('content', '')}"
                     for i in self.invariants.todo]
            notes += "\n\nThe current todo list:\n" + "\n".join(lines)
        return notes

    def _fit(self, slots: list[_Slot]) -> None:
        """Last resort until the context fits under the threshold: mask every output, drop the
        oldest unpinned turns, then shorten the longest unpinned messages."""
        calls = _calls_by_id(slots)
        for slot in slots:
            if self._total(slots) <= self.limit:
                return
            content = str(slot.message.get("content") or "")
            if slot.message.get("role") == "tool" and not content.startswith(MASK_PREFIX):
                slot.message["content"] = placeholder(
                    calls.get(str(slot.message.get("tool_call_id"))), content)
                slot.changed = True
        while self._total(slots) > self.limit:
            group = _oldest_droppable_group(slots)
            if group is None:
                break
            del slots[group[0]:group[1]]
        while (excess := self._total(slots) - self.limit) > 0:
            longest = max((s for s in slots if not s.pinned), default=None,
                          key=lambda s: len(str(s.message.get("content") or "")))
            content = str(longest.message.get("content") or "") if longest else ""
            if longest is None or len(content) < 200:
                return  # only the invariants are left: nothing more may be cut
            keep = max(0, len(content) - 4 * excess - 200)
            longest.message["content"] = _shorten(content, keep)
            longest.changed = True


def placeholder(call: ToolCall | None, content: str) -> str:
    """The one line that stands for a masked tool output."""
    what = "a tool call"
    if call:
        arguments = " ".join(call.arguments.split())
        if len(arguments) > 80:
            arguments = arguments[:77] + "..."
        what = f"{call.name or 'tool'} {arguments}".strip()
    lines = content.count("\n") + 1 if content else 0
    return (f"{MASK_PREFIX} {what} returned {lines} lines, {len(content):,} characters; "
            "call it again if you need them]")


def _shorten(text: str, keep: int) -> str:
    head, tail = text[: keep // 2], text[len(text) - keep // 2:] if keep > 1 else ""
    return f"{head}\n[... {len(text) - len(head) - len(tail):,} characters cut to fit the " \
           f"context window ...]\n{tail}"


def _item(slot: _Slot) -> dict[str, Any]:
    if slot.source is None:
        return {"message": slot.message}
    if slot.changed:
        return {"keep": slot.source, "content": slot.message.get("content")}
    return {"keep": slot.source}


def _calls_by_id(slots: list[_Slot]) -> dict[str, ToolCall]:
    return {c["id"]: ToolCall.model_validate(c) for s in slots
            for c in s.message.get("tool_calls") or []}


def _pending_call(slots: list[_Slot]) -> int:
    """Index of the last assistant message with calls not yet answered (else past the end)."""
    answered = {s.message.get("tool_call_id") for s in slots if s.message.get("role") == "tool"}
    for i in range(len(slots) - 1, -1, -1):
        calls = slots[i].message.get("tool_calls") or []
        if any(c["id"] not in answered for c in calls):
            return i
    return len(slots)


def _oldest_droppable_group(slots: list[_Slot]) -> tuple[int, int] | None:
    """[start, end) of the oldest unpinned message with its tool results; never the last turn
    nor one waiting for results."""
    pending = _pending_call(slots)
    for start, slot in enumerate(slots):
        if slot.pinned or slot.message.get("role") == "tool" or start >= pending:
            continue
        end = start + 1
        while end < len(slots) and slots[end].message.get("role") == "tool":
            end += 1
        return (start, end) if end < len(slots) else None
    return None


def _render(message: dict[str, Any]) -> str:
    content = str(message.get("content") or "")
    if len(content) > TRANSCRIPT_ITEM_CHARS:
        content = _shorten(content, TRANSCRIPT_ITEM_CHARS)
    role = message.get("role")
    if content.startswith(COMPACTED_PREFIX):
        return f"[earlier summary]\n{content}"
    if role == "tool":
        return f"[tool result]\n{content}"
    calls = "".join(f"\n-> {c['function']['name']} {c['function'].get('arguments') or ''}"
                    for c in message.get("tool_calls") or [])
    return f"[{role}]\n{content}{calls}".rstrip()


def _rules_file(workspace: Path) -> tuple[str, str] | None:
    """The first rules file, read without leaving the workspace (a link out is not read)."""
    fs = WorkspaceFS(workspace)
    for name in RULES_FILES:
        if fs.kind(name) == "file":
            try:
                return name, fs.read_bytes(name, MAX_RULES_CHARS * 4).decode(errors="replace")
            except OSError:
                return None
    return None
