"""Red team: replies a hostile or broken provider can send. Each case once ended a run without a
`finished` event (or crashed the export); now each is stored safely, refused with an
observation, or retried and reported. The model is the scripted HTTP server reached through
litellm; git, the tools, the recorder and the exporter are real."""

from __future__ import annotations

import email.utils
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from agent.llm import (
    REPLY_CHARS_MAX,
    RETRY_AFTER_MAX_S,
    LLMClient,
    LLMReply,
    ModelError,
    retry_after_s,
)
from agent.scripted_model import ScriptedModelServer, tool_call
from agent.session import Session
from agent.solve import ProgressPrinter
from agent.tasks import Task
from agent.tool_protocol import _native_message, fold_tool_protocol
from tools.base import ToolBox, ToolContext
from tools.control import default_tools
from tools.workspace import Workspace
from trajectories.events import AssistantMessage, ErrorEvent, Event, Finished, ToolResult, Verified
from trajectories.export import export_rows, to_training_message, write_jsonl
from trajectories.reader import TrajectoryFile, read_trajectory
from trajectories.recorder import TrajectoryRecorder

SURROGATE = "\ud800"
DEEPEST = "[" * 100_000 + "]" * 100_000
FINISH = {"tool_calls": [tool_call("finish", {"summary": "done"})]}


def episode(example: tuple[Path, Path], server: ScriptedModelServer, tmp_path: Path,
            script: list[dict[str, Any]], llm: type[LLMClient] = LLMClient,
            listeners: tuple[Any, ...] = (), **config: Any,
            ) -> tuple[Session, list[Event], TrajectoryFile]:
    """Run one recorded episode on the calculator example (host tools, no sandbox)."""
    repo, issue = example
    server.script = list(script)
    workspace = Workspace.create(repo, f"red-{time.monotonic_ns()}")
    client = llm(server.llm_config(backoff_s=0.01, retries=config.pop("retries", 1), **config))
    events: list[Event] = []
    path = tmp_path / f"{workspace.session_id}.jsonl"
    recorder = TrajectoryRecorder(path)
    session = Session("red", Task.from_issue_file(issue, repo, "python3 -m pytest -q"), client,
                      ToolBox(default_tools()), ToolContext(workspace=workspace.path), workspace,
                      max_steps=6, listeners=[events.append, recorder, *listeners])
    session.run()
    recorder.close()
    return session, events, read_trajectory(path)


def finished(events: list[Event]) -> Finished:
    ends = [e for e in events if isinstance(e, Finished)]
    assert len(ends) == 1, [e.type for e in events]
    return ends[0]


def test_lone_surrogates_in_every_model_field_are_stored_and_sent_safely(
        example, scripted, tmp_path) -> None:
    raw_args = json.dumps({"path": f"notes{SURROGATE}.txt", "file_text": f"a{SURROGATE}b\n"})
    script = [
        {"content": f"thinking {SURROGATE}", "tool_calls": [
            tool_call(f"vi{SURROGATE}ew", {"path": SURROGATE}),
            tool_call("todo", {"items": [{"content": f"fix {SURROGATE}"}]}),
            tool_call("create", raw_args, call_id=f"id{SURROGATE}")]},
        {"tool_calls": [tool_call("finish", {"summary": f"done {SURROGATE}"})]},
    ]
    session, events, recorded = episode(example, scripted, tmp_path, script)
    end = finished(events)
    assert end.exit_status == "finished" and end.summary == "done \ufffd"
    assert not recorded.problems and recorded.events[-1].type == "finished"
    text = recorded.path.read_text(encoding="utf-8")
    assert SURROGATE not in text and "\ufffd" in text
    assert (session.workspace.path / "notes\ufffd.txt").read_text() == "a\ufffdb\n"
    plan = [e for e in events if e.type == "plan_updated"]
    assert plan and plan[0].items[0]["content"] == "fix \ufffd"
    assert len(scripted.requests) == 2  # the second request (carrying it all) was sent


def test_the_recorder_writes_an_event_holding_a_lone_surrogate(tmp_path) -> None:
    recorder = TrajectoryRecorder(tmp_path / "t.jsonl")
    recorder(ToolResult(session_id="s", tool_call_id="c", name="view",
                        output=f"bytes {SURROGATE}", data={"k": [SURROGATE]}))
    recorder.close()
    event = read_trajectory(tmp_path / "t.jsonl").events[0]
    assert isinstance(event, ToolResult) and event.output == "bytes \ufffd"


@pytest.mark.parametrize("call_id", [7, 0, 3.5, True, [1, 2], {"a": 1}, None, ""])
def test_tool_call_ids_of_any_json_type_are_accepted_as_text(
        example, scripted, tmp_path, call_id) -> None:
    call = {"id": call_id, "type": "function",
            "function": {"name": "view", "arguments": '{"path": "README.md"}'}}
    script = [{"response": completion({"role": "assistant", "tool_calls": [call]})}, FINISH]
    _, events, recorded = episode(example, scripted, tmp_path, script)
    assert finished(events).exit_status == "finished"
    results = [e for e in events if isinstance(e, ToolResult)]
    assert results[0].name == "view" and not results[0].is_error
    assert isinstance(results[0].tool_call_id, str) and results[0].tool_call_id
    sent = scripted.requests[1]["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == sent[-1]["tool_call_id"] == results[0].tool_call_id
    assert not recorded.problems


def test_duplicate_tool_call_ids_in_one_reply_are_made_unique(example, scripted, tmp_path) -> None:
    calls = [{"id": "same", "type": "function",
              "function": {"name": "view", "arguments": '{"path": "README.md"}'}}] * 2
    script = [{"response": completion({"role": "assistant", "tool_calls": calls})}, FINISH]
    _, events, _ = episode(example, scripted, tmp_path, script)
    ids = [e.tool_call_id for e in events if isinstance(e, ToolResult)][:2]
    assert len(set(ids)) == 2 and ids[0] == "same"


def test_empty_choices_are_retried_like_a_5xx(example, scripted, tmp_path) -> None:
    script = [{"choices_empty": True}, FINISH]
    _, events, _ = episode(example, scripted, tmp_path, script)
    assert finished(events).exit_status == "finished"
    retried = [e for e in events if isinstance(e, ErrorEvent) and not e.fatal]
    assert retried and "no choices" in retried[0].message


@pytest.mark.parametrize("stream", [False, True])
def test_empty_choices_every_time_end_the_run_with_a_model_error(
        example, scripted, tmp_path, stream) -> None:
    script = [{"choices_empty": True}] * 3
    _, events, recorded = episode(example, scripted, tmp_path, script, retries=2, stream=stream)
    end = finished(events)
    assert end.exit_status == "error"
    fatal = [e for e in events if isinstance(e, ErrorEvent) and e.fatal]
    assert len(fatal) == 1 and "after 3 attempts" in fatal[0].message
    assert len(scripted.requests) == 3 and recorded.events[-1].type == "finished"


class BrokenReplyLLM(LLMClient):
    """A client whose reply handling has a bug (any exception type)."""

    def _reply(self, response: Any, latency: float) -> LLMReply:
        raise KeyError("usage")


def test_an_unexpected_exception_in_the_model_call_still_finishes_the_run(
        example, scripted, tmp_path) -> None:
    _, events, recorded = episode(example, scripted, tmp_path, [FINISH], llm=BrokenReplyLLM)
    end = finished(events)
    assert end.exit_status == "error"
    fatal = [e for e in events if isinstance(e, ErrorEvent) and e.fatal]
    assert fatal and "KeyError" in fatal[0].message
    assert recorded.events[-1].type == "finished"


def test_deeply_nested_arguments_are_an_error_observation(tmp_path) -> None:
    # litellm itself refuses a reply nesting this deep (retried, then a ModelError), but a local
    # model's calls and imported trajectories reach the toolbox as they are.
    observation = ToolBox(default_tools()).call("view", DEEPEST, ToolContext(workspace=tmp_path))
    assert observation.is_error and "nested too deeply" in observation.output


def test_export_reads_a_trajectory_with_100000_deep_arguments(example, scripted, tmp_path) -> None:
    script = [{"tool_calls": [tool_call("view", {"path": "README.md"})]}, FINISH]
    _, _, recorded = episode(example, scripted, tmp_path, script)
    lines = recorded.path.read_text().replace('{\\"path\\": \\"README.md\\"}', DEEPEST)
    assert DEEPEST in lines
    recorded.path.write_text(lines)
    passing = verified(read_trajectory(recorded.path), 1)
    failing = verified(read_trajectory(recorded.path), 0)
    sft = list(export_rows([passing], "sft"))
    assert len(sft) == 1
    assistant = sft[0]["messages"][2]
    assert assistant["tool_calls"][0]["function"]["arguments"] == DEEPEST  # kept as raw text
    assert write_jsonl(sft, tmp_path / "sft.jsonl") == 1
    dpo = list(export_rows([passing, failing], "dpo"))
    assert len(dpo) == 1 and write_jsonl(dpo, tmp_path / "dpo.jsonl") == 1
    folded = fold_tool_protocol(sft[0]["messages"][:3], None)  # local models' rendering
    assert DEEPEST in folded[-1]["content"]


def test_nested_object_arguments_stay_text_in_export_and_rendering(tmp_path) -> None:
    nested = '{"a": ' + "[" * 950 + "]" * 950 + "}"
    message = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "view", "arguments": nested}}]}
    row = to_training_message(message, {})
    assert row["tool_calls"][0]["function"]["arguments"] == nested
    assert write_jsonl([{"messages": [row]}], tmp_path / "x.jsonl") == 1
    assert _native_message(message)["tool_calls"][0]["function"]["arguments"] == nested
    assert nested in fold_tool_protocol([message], None)[0]["content"]


# Retries: the provider's Retry-After is honoured, and every retry is reported as it happens.

def test_a_429_waits_as_long_as_retry_after_says_and_is_shown(example, scripted, tmp_path) -> None:
    printed = io.StringIO()
    script = [{"status": 429, "headers": {"Retry-After": "2"}}, FINISH]
    started = time.monotonic()
    _, events, _ = episode(example, scripted, tmp_path, script, retries=3,
                           listeners=(ProgressPrinter(printed),))
    assert time.monotonic() - started >= 2.0  # backoff_s alone would have waited 0.01 s
    assert finished(events).exit_status == "finished"
    notice = "rate limited by openai/scripted (429); retrying in 2.0 s (attempt 2 of 4)"
    assert [e.message for e in events if isinstance(e, ErrorEvent)] == [notice]
    assert notice in printed.getvalue()


def provider_error(server: ScriptedModelServer, headers: dict[str, str]) -> Exception:
    """The litellm exception a 429 with these headers raises (through the real HTTP path)."""
    server.script = [{"status": 429, "headers": headers}]
    with pytest.raises(ModelError) as raised:
        LLMClient(server.llm_config(retries=0)).complete([{"role": "user", "content": "hi"}], [])
    assert raised.value.__cause__ is not None
    return raised.value.__cause__


def test_retry_after_is_read_as_seconds_an_http_date_or_milliseconds(scripted) -> None:
    assert retry_after_s(provider_error(scripted, {"Retry-After": "3"})) == 3.0
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 27 <= (retry_after_s(provider_error(scripted, {"Retry-After": date})) or 0) <= 30
    assert retry_after_s(provider_error(scripted, {"retry-after-ms": "1500"})) == 1.5
    assert retry_after_s(provider_error(scripted, {"Retry-After": "soon"})) is None
    assert retry_after_s(provider_error(scripted, {})) is None


def test_a_huge_retry_after_is_capped(scripted) -> None:
    exc = provider_error(scripted, {"Retry-After": "86400"})
    client = LLMClient(scripted.llm_config(backoff_s=0.01))
    assert client._delay(exc, 1) == RETRY_AFTER_MAX_S
    assert client._delay(provider_error(scripted, {}), 1) < 0.02  # no header: the backoff


# Bounded events: a provider's megabytes are cut where they enter.

def test_huge_content_and_arguments_are_cut_with_a_note(example, scripted, tmp_path) -> None:
    huge = "x" * (3 * REPLY_CHARS_MAX)
    script = [{"content": huge, "tool_calls": [tool_call("view", '{"path": "' + huge + '"}')]},
              FINISH]
    _, events, recorded = episode(example, scripted, tmp_path, script)
    assert finished(events).exit_status == "finished"
    reply = next(e for e in events if isinstance(e, AssistantMessage))
    arguments = reply.tool_calls[0].arguments
    for text in (reply.content or "", arguments):
        assert REPLY_CHARS_MAX < len(text) < REPLY_CHARS_MAX + 200
        assert f"characters; only the first {REPLY_CHARS_MAX:,} are kept]" in text
    result = next(e for e in events if isinstance(e, ToolResult))
    assert result.is_error  # the cut arguments are no longer JSON, and the model is told
    longest = max(len(line) for line in recorded.path.read_text().splitlines())
    assert longest < 3 * REPLY_CHARS_MAX


def verified(trajectory: TrajectoryFile, reward: int) -> TrajectoryFile:
    header = trajectory.header
    assert header is not None
    event = Verified(session_id=header.session_id, reward=reward, test_command="true",
                     test_output="")
    return TrajectoryFile(trajectory.path, [*trajectory.events, event])


def completion(message: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion body holding `message`, for `{"response": ...}` steps."""
    return {"id": "chatcmpl-red", "object": "chat.completion", "created": 1, "model": "scripted",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


def test_a_529_overloaded_is_retried(example, scripted, tmp_path) -> None:
    _, events, _ = episode(example, scripted, tmp_path, [{"status": 529}, FINISH], retries=2)
    assert finished(events).exit_status == "finished"
    assert any(isinstance(e, ErrorEvent) and "retrying" in e.message for e in events)


def test_an_interrupt_ends_a_long_retry_after_wait(example, scripted, tmp_path,
                                                   monkeypatch) -> None:
    import threading

    holder: list[Session] = []

    def interrupt_on_retry(event: Event) -> None:
        if isinstance(event, ErrorEvent) and "retrying" in event.message:
            threading.Timer(0.5, lambda: holder[0].interrupt()).start()

    script = [{"status": 429, "headers": {"Retry-After": "50"}}, FINISH]
    started = time.monotonic()
    original_init = Session.__init__

    def remember(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        original_init(self, *args, **kwargs)
        holder.append(self)

    monkeypatch.setattr(Session, "__init__", remember)
    _, events, _ = episode(example, scripted, tmp_path, script, retries=3,
                           listeners=(interrupt_on_retry,))
    assert time.monotonic() - started < 10
    assert finished(events).exit_status == "interrupted"
