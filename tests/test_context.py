"""Context compaction: long scripted sessions with big outputs in a small window. The model is a
real HTTP server reached through litellm; git, the tools and the recorder are real."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.context import (
    COMPACTED_PREFIX,
    MASK_PREFIX,
    SUMMARY_SYSTEM,
    Compactor,
    ContextConfig,
    TokenCounter,
    context_window,
)
from agent.llm import LLMClient, LLMConfig
from agent.scripted_model import ScriptedModelServer, tool_call
from agent.session import Session
from agent.tasks import Task
from tools.base import ToolBox, ToolContext
from tools.control import default_tools
from tools.workspace import Workspace
from trajectories.events import Compaction, ErrorEvent, Event
from trajectories.reader import apply_compaction, rebuild_calls
from trajectories.recorder import TrajectoryRecorder

RULES = "Never edit tests/. Run the tests before finishing."
SUMMARY = ("## Goal\n- make add() add\n## Decisions\n- none yet\n## Plan state\n- reading\n"
           "## Files touched\n- none\n## Tried and failed\n- nothing\n## Next steps\n- fix add")
PLAN = [{"content": "read the data files", "status": "in_progress"},
        {"content": "fix add", "status": "pending"}]
WINDOW = 5000


class SummarisingLLM(ScriptedModelServer):
    """The scripted model, answering summary requests itself (or failing them with a 400) so a
    script only holds the agent's turns, wherever compaction happens."""

    def __init__(self, script: list[dict[str, Any]] | None = None, fail_summaries: bool = False):
        super().__init__(script)
        self.fail_summaries = fail_summaries

    def _next_step(self) -> dict[str, Any]:
        if is_summary_request(self.requests[-1]):
            return {"status": 400} if self.fail_summaries else {"content": SUMMARY}
        return super()._next_step()

    @property
    def agent_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if not is_summary_request(r)]


def is_summary_request(body: dict[str, Any]) -> bool:
    return body["messages"][0]["content"] == SUMMARY_SYSTEM


@pytest.fixture
def model():
    with SummarisingLLM() as server:
        yield server


@pytest.fixture
def big_repo(example) -> tuple[Path, Path]:
    """The calculator example with an AGENTS.md and ten ~1,000-token data files."""
    repo, issue = example
    (repo / "AGENTS.md").write_text(RULES + "\n")
    for i in range(10):
        lines = [f"record {i}-{n}: value={n * 7 % 13} note=the quick brown fox" for n in range(90)]
        (repo / "data").mkdir(exist_ok=True)
        (repo / "data" / f"file_{i}.txt").write_text("\n".join(lines) + "\n")
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "data"], check=True)
    return repo, issue


def views(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"content": f"Reading file {i % 10}.", "tool_calls": [
        tool_call("view", {"path": f"data/file_{i % 10}.txt"})]} for i in range(start, count)]


def make_session(repo: Path, issue: Path, model: ScriptedModelServer, events: list[Event],
                 **config: Any) -> Session:
    workspace = Workspace.create(repo, f"ctx-{len(model.script)}-{id(events)}")
    task = Task.from_issue_file(issue, repo, "python3 -m pytest -q")
    llm = LLMClient(LLMConfig(model="openai/scripted", api_base=model.url, backoff_s=0.01,
                              retries=0, max_tokens=256))
    settings = {"context_window": WINDOW, "repo_map_tokens": 0, **config}
    return Session("ctx", task, llm, ToolBox(default_tools()),
                   ToolContext(workspace=workspace.path), workspace, max_steps=60,
                   listeners=[events.append], context=ContextConfig(**settings))


def request_tokens(body: dict[str, Any]) -> int:
    return TokenCounter("openai/scripted").count(body["messages"], body.get("tools") or [])


def assert_pairs_complete(messages: list[dict[str, Any]]) -> None:
    """Every tool result follows its call, and every call is answered before the next turn."""
    open_calls: set[str] = set()
    for message in messages:
        if message["role"] == "tool":
            assert message["tool_call_id"] in open_calls, f"orphan result {message}"
            open_calls.discard(message["tool_call_id"])
            continue
        assert not open_calls, f"calls {open_calls} unanswered before {message['role']}"
        open_calls = {c["id"] for c in message.get("tool_calls") or []}


def run_long_session(big_repo, model, steps: int = 24, **config: Any):
    repo, issue = big_repo
    model.script = [{"tool_calls": [tool_call("todo", {"items": PLAN})]}, *views(steps),
                    {"tool_calls": [tool_call("finish", {"summary": "read everything"})]}]
    events: list[Event] = []
    session = make_session(repo, issue, model, events, **config)
    result = session.run()
    return session, result, events


def test_a_long_session_never_exceeds_the_window_and_keeps_the_plot(big_repo, model) -> None:
    session, result, events = run_long_session(big_repo, model)
    assert result.exit_status == "finished"
    compactions = [e for e in events if isinstance(e, Compaction)]
    assert len(compactions) >= 2 and {c.stage for c in compactions} >= {"summarised"}
    limit = int(WINDOW * 0.8)
    assert all(request_tokens(r) <= limit for r in model.agent_requests)
    summaries = [r for r in model.requests if is_summary_request(r)]
    assert summaries and all(request_tokens(r) <= WINDOW for r in summaries)
    first = model.agent_requests[0]["messages"]
    system, task = first[0], first[1]
    assert RULES in system["content"]
    for request in model.agent_requests:
        messages = request["messages"]
        assert messages[0] == system and messages[1] == task  # verbatim, every call
        assert_pairs_complete(messages)
    after = [r["messages"] for r in model.agent_requests
             if any(COMPACTED_PREFIX in str(m.get("content")) for m in r["messages"])]
    assert after
    for messages in after:
        note = messages[2]["content"]
        assert note.startswith(COMPACTED_PREFIX) and "## Goal" in note
        assert "[~] read the data files\n[ ] fix add" in note  # the todo list, re-injected
    assert sum(c.prompt_tokens for c in compactions) > 0  # the summary calls are accounted


def test_the_trajectory_rebuilds_every_call_across_compactions(big_repo, model, tmp_path) -> None:
    repo, issue = big_repo
    model.script = [*views(14), {"tool_calls": [tool_call("finish", {"summary": "done"})]}]
    events: list[Event] = []
    session = make_session(repo, issue, model, events)
    recorder = TrajectoryRecorder(tmp_path / "t.jsonl")
    session.listeners.append(recorder)
    session.run()
    recorder.close()
    from trajectories.reader import read_trajectory

    recorded = read_trajectory(tmp_path / "t.jsonl")
    assert not recorded.problems
    assert any(e.type == "compaction" for e in recorded.events)
    calls = rebuild_calls(recorded.events)
    sent = model.agent_requests
    assert len(calls) == len(sent)
    for call, request in zip(calls, sent, strict=True):
        assert call["messages"] == request["messages"]
    # SFT export: one row per context segment, each the last context of its segment + reply,
    # so every assistant turn is trained on in a context the model really saw.
    from trajectories.export import sft_rows

    rows = sft_rows(recorded)
    segments = sorted({call["segment"] for call in calls})
    compactions = [e for e in recorded.events if e.type == "compaction"]
    assert segments == list(range(len(compactions) + 1)) == [row["segment"] for row in rows]
    for row in rows:
        last = [c for c in calls if c["segment"] == row["segment"]][-1]
        assert len(row["messages"]) == len(last["messages"]) + 1
        assert [m["role"] for m in row["messages"][:-1]] == [m["role"] for m in last["messages"]]
        assert row["messages"][-1]["role"] == "assistant"
    trained = sum(1 for row in rows for m in row["messages"] if m["role"] == "assistant")
    assert trained >= len(calls)  # no assistant turn is lost to a compaction
    # A resumed session rebuilds the same context from the same events.
    resumed = make_session(repo, issue, model, [])
    resumed.restore(recorded.events)
    assert resumed.messages == session.messages


def test_a_failed_summary_drops_the_oldest_turns_instead(big_repo) -> None:
    with SummarisingLLM(fail_summaries=True) as model:
        session, result, events = run_long_session(big_repo, model, steps=24)
        compactions = [e for e in events if isinstance(e, Compaction)]
        assert result.exit_status == "finished"
        dropped = [c for c in compactions if c.stage == "dropped"]
        assert dropped and all(c.summary is None and c.summary_error for c in dropped)
        assert "400" in (dropped[0].summary_error or "")
        for request in model.agent_requests:
            assert request_tokens(request) <= int(WINDOW * 0.8)
            assert_pairs_complete(request["messages"])
        note = next(m["content"] for m in model.agent_requests[-1]["messages"]
                    if COMPACTED_PREFIX in str(m.get("content")))
        assert "were dropped" in note and "fix add" in note


def test_old_outputs_are_masked_first(big_repo, model) -> None:
    session, _, events = run_long_session(big_repo, model, steps=6, keep_outputs=1,
                                          context_window=8000, target=0.55)
    first = next(e for e in events if isinstance(e, Compaction))
    assert first.stage == "masked" and first.masked and not first.removed
    placeholder = first.context[first.masked[0]]["content"]
    assert placeholder.startswith(MASK_PREFIX) and "view" in placeholder
    assert "lines" in placeholder and "characters" in placeholder and "\n" not in placeholder


def test_compact_on_request_and_the_latest_user_message(big_repo, model) -> None:
    repo, issue = big_repo
    model.script = [*views(3), {"content": "Read them."}, *views(3, 3), {"content": "Done."}]
    events: list[Event] = []
    session = make_session(repo, issue, model, events, context_window=100_000)
    assert session.send("Read a few data files.") == "answered"
    instruction = "Now read three more, and never touch tests/."
    assert session.send(instruction) == "answered"
    event = session.compact()
    assert event is not None and event.reason == "requested" and event.stage == "summarised"
    messages = list(session.messages)
    assert messages[0]["role"] == "system"
    assert any(m["content"] == instruction for m in messages if m["role"] == "user")
    assert not any(str(m.get("content")).startswith("Reading file") for m in messages[:3])
    assert_pairs_complete(messages)
    model.script = [{"content": "ok"}]
    session.send("Thanks.")
    assert model.agent_requests[-1]["messages"][:len(messages)] == messages


def test_a_half_finished_tool_call_pair_is_never_split(model) -> None:
    big = "x " * 3000
    messages: list[dict[str, Any]] = [{"role": "system", "content": "sys"},
                                      {"role": "user", "content": "the task"}]
    for i in range(6):
        messages.append({"role": "assistant", "content": f"step {i}", "tool_calls": [
            {"id": f"c{i}", "type": "function",
             "function": {"name": "view", "arguments": json.dumps({"path": f"f{i}"})}}]})
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": big})
    pending = {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"p{n}", "type": "function", "function": {"name": "bash", "arguments": "{}"}}
        for n in range(2)]}
    messages += [pending, {"role": "tool", "tool_call_id": "p0", "content": big}]
    llm = LLMClient(LLMConfig(model="openai/scripted", api_base=model.url, retries=0))
    compactor = Compactor(ContextConfig(context_window=4000, keep_outputs=0), llm, [])
    compactor.invariants.task = compactor.invariants.latest_user = "the task"
    for reason in ("threshold", "requested"):
        event = compactor.compact(messages, "s", reason=reason)  # type: ignore[arg-type]
        assert event is not None
        after = apply_compaction(messages, event)
        index = next(i for i, m in enumerate(after) if m.get("tool_calls") == pending["tool_calls"])
        assert after[index + 1]["tool_call_id"] == "p0" and index + 2 == len(after)
        after.append({"role": "tool", "tool_call_id": "p1", "content": "late"})
        assert_pairs_complete(after)
        assert after[:2] == messages[:2]
        assert compactor.tokens(after[:-1]) <= compactor.limit


def test_the_window_comes_from_metadata_or_the_flag() -> None:
    assert context_window("local/smollm2-135m") == 8192
    assert context_window("gpt-4o") == 128_000
    assert context_window("openai/no-such-model") == 128_000
    assert context_window("gpt-4o", 3000) == 3000
    with pytest.raises(ValidationError, match="below threshold"):
        ContextConfig(threshold=0.5, target=0.6)


OVERFLOW = ("This model's maximum context length is 5000 tokens. However, your messages "
            "resulted in 5210 tokens. Please reduce the length of the messages.")


def test_a_provider_that_counts_more_than_we_do_gets_a_compacted_context(big_repo,
                                                                         model) -> None:
    """The window is not overflowed by our count, yet the provider refuses the request as too
    long: the session compacts what it can and asks once more, instead of ending."""
    repo, issue = big_repo
    model.script = [*views(3), {"status": 400, "message": OVERFLOW},
                    {"tool_calls": [tool_call("finish", {"summary": "read them"})]}]
    events: list[Event] = []
    session = make_session(repo, issue, model, events, context_window=100_000)
    result = session.run()
    assert result.exit_status == "finished", result
    compaction = next(e for e in events if isinstance(e, Compaction))
    assert compaction.reason == "requested" and compaction.step == 4
    [note] = [e for e in events if isinstance(e, ErrorEvent)]
    assert not note.fatal and "compacted the context and asked again" in note.message
    retried = model.agent_requests[-1]["messages"]
    assert len(retried) < len(model.agent_requests[-2]["messages"])
    assert_pairs_complete(retried)


def test_a_request_still_too_long_after_compaction_ends_the_episode(big_repo, model) -> None:
    repo, issue = big_repo
    model.script = [*views(2), *[{"status": 400, "message": OVERFLOW}] * 2]
    events: list[Event] = []
    session = make_session(repo, issue, model, events, context_window=100_000)
    result = session.run()
    assert result.exit_status == "error" and "maximum context length" in (result.error or "")
    assert sum(isinstance(e, Compaction) for e in events) == 1
