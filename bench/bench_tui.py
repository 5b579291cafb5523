"""How the TUI keeps up: key presses while a reply streams in, and opening a long session.

    python bench/bench_tui.py [--rate 1000] [--seconds 5] [--events 5000]

- streaming: a thread emits assistant text at `--rate` tokens per second (one event per token,
  through the same listener the session uses) while another thread types a key every 100 ms
  the way the terminal driver does; each key's latency is the time until the prompt holds it.
  Also: how far the rendered Markdown lags behind the stream when it ends. Target: p99 < 50 ms.
- opening: a recorded session of `--events` events (turns of model replies, tool calls with
  20-line outputs, checkpoints, plan updates), resumed with `--resume`: the time until the
  conversation is on screen. Target: < 2 s. The sandbox is local, so only the TUI is timed.

Runs headless (Textual's test driver) at 120x40; needs no Docker and no model.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from textual import events

from agent.episode import EpisodeConfig  # noqa: E402
from agent.example_repos import init_example
from agent.llm import LLMConfig
from tools.sandbox import SandboxConfig
from tools.workspace import Workspace
from trajectories.events import (
    AssistantDelta,
    AssistantMessage,
    Checkpoint,
    Event,
    ModelCallStarted,
    PlanUpdated,
    SessionStarted,
    ToolCallStarted,
    ToolResult,
    UserMessage,
)
from tui.app import ApprenticeApp
from tui.widgets.conversation import ConversationView
from tui.widgets.message_blocks import AssistantBlock
from tui.widgets.prompt_input import PromptInput

SIZE = (120, 40)
WORDS = ("the", "session", "keeps", "a", "plan", "and", "checks", "each", "edit", "with",
         "tests", "before", "it", "moves", "on")


class StreamOnlyApp(ApprenticeApp):
    """The app with no session behind it: the bench feeds it events directly."""

    def open_session(self, resume_id: str | None) -> None:  # type: ignore[override]
        pass


def token_stream(count: int) -> list[str]:
    """`count` tokens of Markdown: paragraphs, a list, inline code and a fenced block."""
    tokens = []
    for i in range(count):
        word = WORDS[i % len(WORDS)]
        if i % 120 == 0:
            tokens.append(f"\n\n## Part {i // 120}\n\n")
        elif i % 40 == 0:
            tokens.append("\n- ")
        elif i % 97 == 0:
            tokens.append("\n\n```python\nx = 1\n```\n\n")
        elif i % 13 == 0:
            tokens.append(f" `{word}`")
        else:
            tokens.append(f" {word}")
    return tokens


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class PauseWatch:
    """The longest garbage-collection pause while it is installed (to explain outliers)."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self._started)


async def bench_streaming(rate: int, seconds: float) -> dict[str, float]:
    app = StreamOnlyApp()
    latencies: list[float] = []
    gc_pauses = PauseWatch()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(1.0)  # the app has started and settled
        prompt = app.query_one(PromptInput)
        tokens = token_stream(int(rate * seconds))
        done = threading.Event()

        def stream() -> None:
            app.forward(ModelCallStarted(session_id="b", step=1, prompt_messages=2))
            started = time.perf_counter()
            for index, token in enumerate(tokens):
                due = started + index / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                app.forward(AssistantDelta(session_id="b", step=1, text=token))
            done.set()

        def type_keys() -> None:
            driver = app._driver
            assert driver is not None
            while not done.is_set():
                before = len(prompt.text)
                sent = time.perf_counter()
                driver.process_message(events.Key("x", "x"))
                while len(prompt.text) == before and time.perf_counter() - sent < 2.0:
                    time.sleep(0.0005)
                latencies.append(time.perf_counter() - sent)
                time.sleep(0.1)

        gc.callbacks.append(gc_pauses)
        threads = [threading.Thread(target=stream), threading.Thread(target=type_keys)]
        for thread in threads:
            thread.start()
        while not done.is_set():
            await asyncio.sleep(0.05)
        stream_end = time.perf_counter()
        for thread in threads:
            thread.join()
        gc.callbacks.remove(gc_pauses)
        expected = "".join(tokens)
        block = app.query_one(AssistantBlock)
        while block.text != expected or block.shown_chars != len(expected):
            await asyncio.sleep(0.005)
        lag = time.perf_counter() - stream_end
    return {"keys": len(latencies), "median_ms": statistics.median(latencies) * 1e3,
            "over_50ms": sum(1 for x in latencies if x > 0.05), "gc_ms": gc_pauses.longest * 1e3,
            "p99_ms": percentile(latencies, 0.99) * 1e3, "max_ms": max(latencies) * 1e3,
            "lag_ms": lag * 1e3, "tokens": len(tokens)}


def recorded_session(count: int, repo: Path, session_id: str) -> list[Event]:
    """A plausible session of `count` events on `repo`'s branch agent/<session_id>."""
    workspace = Workspace.create(repo, session_id)
    workspace.remove()  # the branch stays: resume checks it out again
    header = SessionStarted(
        session_id=session_id, software_version="bench", model="openai/bench",
        task={"instance_id": "bench", "repo": str(repo), "problem_statement": "bench",
              "test_command": "true"},
        system_prompt="You are a bench.", tools=[], repo=str(repo),
        base_commit=workspace.base_commit, branch=workspace.branch)
    out: list[Event] = [header]
    step = 0
    output = "\n".join(f"line {n}: " + " ".join(WORDS) for n in range(20))
    while len(out) < count:
        step += 1
        if step % 25 == 1:
            out.append(UserMessage(session_id=session_id, step=step, content=f"request {step}"))
        call = {"id": f"call_{step}", "type": "function",
                "function": {"name": "bash", "arguments": json.dumps({"command": f"ls {step}"})}}
        out.append(ModelCallStarted(session_id=session_id, step=step, prompt_messages=step))
        out.append(AssistantMessage(session_id=session_id, step=step, tool_calls=[call],
                                    content=f"Step {step}: looking at **part** {step}.",
                                    prompt_tokens=1000 + step, completion_tokens=20))
        out.append(ToolCallStarted(session_id=session_id, step=step, tool_call_id=call["id"],
                                   name="bash", arguments=call["function"]["arguments"]))
        out.append(ToolResult(session_id=session_id, step=step, tool_call_id=call["id"],
                              name="bash", output=output, data={"exit_code": 0}))
        if step % 10 == 0:
            out.append(Checkpoint(session_id=session_id, step=step, commit="0" * 40))
        if step % 15 == 0:
            out.append(PlanUpdated(session_id=session_id, step=step, items=[
                {"content": f"item {n}", "status": "pending"} for n in range(5)]))
    return out[:count]


async def bench_opening(count: int, home: Path) -> dict[str, float]:
    repo, _ = init_example("calculator", home / "example")
    session_id = "bench-open"
    recorded = recorded_session(count, repo, session_id)
    path = home / "runs" / session_id / f"{session_id}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(e.model_dump(mode="json")) + "\n" for e in recorded))
    options = EpisodeConfig(llm=LLMConfig(model="openai/bench"),
                            sandbox=SandboxConfig(kind="local"))
    app = ApprenticeApp(options, repo=repo, resume=session_id)
    started = time.perf_counter()
    async with app.run_test(size=SIZE) as pilot:
        conversation = app.query_one(ConversationView)
        while not conversation.children:
            await asyncio.sleep(0.002)
        await pilot.pause()
        shown = time.perf_counter() - started
        while app.host is None:
            await asyncio.sleep(0.01)
        ready = time.perf_counter() - started
        blocks = len(conversation.children)
    return {"events": len(recorded), "entries": len(app.transcript.entries), "blocks": blocks,
            "shown_s": shown, "ready_s": ready}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="tokens per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the stream")
    parser.add_argument("--events", type=int, default=5000, help="events in the session")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["APPRENTICE_HOME"] = tmp
        stream = await bench_streaming(args.rate, args.seconds)
        print(f"streaming {stream['tokens']:.0f} tokens at {args.rate}/s: {stream['keys']:.0f} "
              f"key presses, latency median {stream['median_ms']:.1f} ms, p99 "
              f"{stream['p99_ms']:.1f} ms, max {stream['max_ms']:.1f} ms, "
              f"{stream['over_50ms']:.0f} over 50 ms (target: none); Markdown caught up "
              f"{stream['lag_ms']:.0f} ms after the last token; longest GC pause "
              f"{stream['gc_ms']:.0f} ms; load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} CPUs")
        opened = await bench_opening(args.events, Path(tmp))
        print(f"opening a recorded session of {opened['events']:.0f} events "
              f"({opened['entries']:.0f} blocks, {opened['blocks']:.0f} mounted): on screen in "
              f"{opened['shown_s']:.2f} s (target < 2 s); session ready (worktree + local "
              f"sandbox) in {opened['ready_s']:.2f} s")


if __name__ == "__main__":
    asyncio.run(main())
