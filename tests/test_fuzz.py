"""Fuzzing what a model or provider can send: thousands of malformed tool calls straight into the
toolbox, malformed replies through the real HTTP path and litellm, and whole episodes of them.
Zero crashes allowed: every call is an observation, every reply an LLMReply or a ModelError,
every episode ends with `finished` in a readable trajectory."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.llm import (
    REPLY_CHARS_MAX,
    EmptyReplyError,
    LLMClient,
    LLMConfig,
    LLMReply,
    ModelError,
)
from agent.scripted_model import ScriptedModelServer
from agent.session import Session
from agent.tasks import Task
from tools.base import Observation, ToolBox, ToolContext
from tools.control import default_tools
from tools.workspace import Workspace
from trajectories.events import Event, Finished, ToolResult
from trajectories.export import export_rows
from trajectories.reader import read_trajectory
from trajectories.recorder import TrajectoryRecorder

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))
TOOLS = default_tools()
NAMES = [tool.name for tool in TOOLS]
FIELDS = sorted({field for tool in TOOLS for field in tool.Args.model_fields})

TEXT = st.text(st.one_of(st.characters(), st.characters(min_codepoint=0xD800,
                                                        max_codepoint=0xDFFF)), max_size=40)
"""Any text, lone surrogates included (st.characters() alone leaves them out)."""
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12)
DEEP = st.integers(500, 60_000).flatmap(lambda n: st.sampled_from([
    "[" * n + "]" * n, '{"path": ' + "[" * n + "]" * n + "}", "{" * n, '{"a": ' * n]))
HUGE = st.integers(REPLY_CHARS_MAX // 2, 3 * REPLY_CHARS_MAX).flatmap(lambda n: st.sampled_from([
    json.dumps({"path": "a" * n}), json.dumps({"command": "x" * n}), "z" * n]))
FIELD_ARGS = st.dictionaries(st.sampled_from(FIELDS), JSON | TEXT, max_size=4)
"""Objects with the tools' real argument names and values of any JSON type."""
ARGUMENTS = st.one_of(
    FIELD_ARGS.map(json.dumps), FIELD_ARGS.map(lambda d: json.dumps(d, ensure_ascii=False)),
    FIELD_ARGS, JSON.map(json.dumps), TEXT, DEEP, HUGE, st.none(), st.just(""), JSON)
NAME = st.one_of(st.sampled_from(NAMES), st.sampled_from(NAMES), TEXT, st.none(), st.integers())


def test_the_toolbox_turns_thousands_of_malformed_calls_into_observations(tmp_path) -> None:
    toolbox = ToolBox(TOOLS)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "README.md").write_text("hello\n")
    ctx = ToolContext(workspace=workspace)
    recorder = TrajectoryRecorder(tmp_path / "calls.jsonl")
    cases = []

    @settings(FUZZ, max_examples=2000)
    @given(name=NAME, arguments=ARGUMENTS)
    def call(name: Any, arguments: Any) -> None:
        observation = toolbox.call(name, arguments, ctx)
        assert isinstance(observation, Observation) and isinstance(observation.output, str)
        recorder(ToolResult(session_id="fuzz", tool_call_id="c", name=str(name),
                            output=observation.output, is_error=observation.is_error,
                            data=observation.data))
        cases.append(observation.is_error)

    started = time.monotonic()
    call()
    recorder.close()
    recorded = read_trajectory(tmp_path / "calls.jsonl")
    assert not recorded.problems and len(recorded.events) == len(cases)
    assert len(cases) >= 1500 and 0 < sum(cases) < len(cases)  # some calls also ran fine
    print(f"{len(cases)} tool calls in {time.monotonic() - started:.1f} s")


CALL = st.fixed_dictionaries({}, optional={
    "id": JSON, "type": st.sampled_from(["function", "custom"]) | JSON,
    "function": st.fixed_dictionaries({}, optional={
        "name": st.sampled_from(NAMES) | TEXT | JSON, "arguments": ARGUMENTS | JSON}) | JSON,
})
MESSAGE = st.fixed_dictionaries({}, optional={
    "role": st.just("assistant") | JSON, "content": TEXT | JSON | HUGE,
    "tool_calls": st.lists(CALL | JSON, max_size=3) | JSON,
})
CHOICE = st.fixed_dictionaries({"index": st.integers(0, 2)}, optional={
    "message": MESSAGE | JSON, "finish_reason": st.sampled_from(["stop", "tool_calls"]) | JSON})
USAGE = st.fixed_dictionaries({}, optional={
    "prompt_tokens": st.integers() | JSON, "completion_tokens": st.integers() | JSON})
HEAD = {"object": st.just("chat.completion"), "model": st.just("scripted")}
BODY = st.one_of(
    JSON,
    st.fixed_dictionaries(HEAD, optional={
        "id": JSON, "choices": st.lists(CHOICE, max_size=2) | JSON, "usage": USAGE | JSON,
        "created": st.integers() | JSON}),
    st.fixed_dictionaries({**HEAD, "choices": st.lists(st.fixed_dictionaries(
        {"index": st.just(0), "message": MESSAGE}), min_size=1, max_size=2)},
        optional={"usage": USAGE}),
)
"""Any JSON, completions with any fields, and completions whose message has any fields."""


def assert_clean(reply: LLMReply) -> None:
    """A reply is bounded, typed and encodable, whatever the provider sent."""
    assert reply.content is None or isinstance(reply.content, str)
    assert len(reply.content or "") <= REPLY_CHARS_MAX + 200
    ids = [call.id for call in reply.tool_calls]
    assert len(set(ids)) == len(ids) and all(isinstance(i, str) and i for i in ids)
    for call in reply.tool_calls:
        assert isinstance(call.name, str)
        assert len(call.arguments) <= REPLY_CHARS_MAX + 200
    json.dumps([reply.content, [c.model_dump() for c in reply.tool_calls]],
               ensure_ascii=False).encode("utf-8")
    assert reply.usage.prompt_tokens >= 0 and reply.usage.completion_tokens >= 0


def test_malformed_replies_through_litellm_are_a_reply_or_a_model_error() -> None:
    outcomes: dict[str, int] = {"reply": 0, "error": 0}
    with ScriptedModelServer() as server:
        client = LLMClient(server.llm_config(retries=0))

        @settings(FUZZ, max_examples=150)
        @given(body=BODY)
        def reply(body: Any) -> None:
            server.script = [{"response": body}]
            try:
                result = client.complete([{"role": "user", "content": "hi"}], [])
            except ModelError:
                outcomes["error"] += 1
                return
            assert_clean(result)
            outcomes["reply"] += 1

        reply()
    assert outcomes["reply"] > 20 and outcomes["error"] > 20, outcomes


def loose(value: Any) -> Any:
    """A JSON value as an object tree with attributes, the shape _reply reads (litellm's, or a
    custom provider's that did not validate anything)."""
    if isinstance(value, dict):
        return SimpleNamespace(**{str(k): loose(v) for k, v in value.items()})
    if isinstance(value, list):
        return [loose(v) for v in value]
    return value


def test_reply_parsing_survives_any_attribute_types() -> None:
    client = LLMClient(LLMConfig(model="openai/fuzz"))
    count = 0

    @settings(FUZZ, max_examples=1000)
    @given(choices=st.lists(CHOICE, max_size=2), usage=USAGE | JSON)
    def reply(choices: list[dict[str, Any]], usage: Any) -> None:
        nonlocal count
        response = loose({"choices": choices, "usage": usage})
        try:
            result = client._reply(response, 0.0)
        except ModelError:
            return
        except EmptyReplyError:  # retried by complete(); only when there is no message
            assert not choices or choices[0].get("message") is None
            return
        assert_clean(result)
        count += 1

    reply()
    assert count > 300


STEP = st.one_of(
    st.builds(lambda body: {"response": body}, BODY),
    st.fixed_dictionaries({"status": st.sampled_from([400, 404, 422, 429, 500, 503, 529])},
                          optional={"headers": st.just({"Retry-After": "0"})}),
    st.just({"choices_empty": True}),
    st.builds(lambda message: {"response": {"object": "chat.completion", "model": "s",
                                            "choices": [{"index": 0, "message": message}]}},
              MESSAGE),
)


def test_episodes_of_malformed_replies_always_finish(example, tmp_path) -> None:
    repo, issue = example
    task = Task.from_issue_file(issue, repo, "python3 -m pytest -q")
    statuses: list[str] = []
    with ScriptedModelServer() as server:

        @settings(FUZZ, max_examples=12)
        @given(script=st.lists(STEP, min_size=1, max_size=5), stream=st.booleans())
        def episode(script: list[dict[str, Any]], stream: bool) -> None:
            server.script = list(script)
            workspace = Workspace.create(repo, f"fuzz-{time.monotonic_ns()}")
            path = tmp_path / f"{workspace.session_id}.jsonl"
            recorder = TrajectoryRecorder(path)
            events: list[Event] = []
            llm = LLMClient(server.llm_config(backoff_s=0.001, retries=1, stream=stream))
            session = Session("fuzz", task, llm, ToolBox(default_tools()),
                              ToolContext(workspace=workspace.path), workspace, max_steps=4,
                              listeners=[events.append, recorder])
            result = session.run()
            recorder.close()
            assert [type(e) for e in events].count(Finished) == 1
            recorded = read_trajectory(path)
            assert not recorded.problems and recorded.events[-1].type == "finished"
            list(export_rows([recorded], "sft", include_failures=True))
            statuses.append(result.exit_status)

        episode()
    assert len(statuses) == 12 and set(statuses) - {"error"}, statuses

