"""`agent trajectories ...`, `agent verify` and `agent replay`: list, read, re-index, export,
import, judge and replay episodes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from tools.locations import data_dir
from trajectories.events import AssistantMessage, ToolResult, UserMessage, Verified
from trajectories.reader import (
    TrajectoryFile,
    UnsupportedSchemaError,
    read_trajectory,
    rebuild_calls,
    subagent_links,
)
from trajectories.redact import Redactor
from trajectories.store import TrajectoryStore

trajectories_app = typer.Typer(help="Recorded episodes: list, show, reindex, export, import.",
                               no_args_is_help=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    print(f"agent: error: {message}", file=sys.stderr)
    return typer.Exit(code)


def locate(id_or_path: str, error_code: int = 1) -> Path:
    """A trajectory file from a path or an episode id (a unique prefix will do)."""
    path = Path(id_or_path)
    if path.is_file():
        return path
    store = TrajectoryStore()
    try:
        row = store.get(id_or_path)
        parent = store.get(id_or_path.split(".task")[0]) if row is None else None
    finally:
        store.close()
    if parent is not None:  # a subagent's trajectory (`<parent-id>.taskN`) is beside its parent's
        nested = Path(parent["path"]).with_name(f"{id_or_path}.jsonl")
        if nested.is_file():
            return nested
    if row is None or not Path(row["path"]).is_file():
        raise _fail(f"no trajectory {id_or_path!r}: give a .jsonl path or an id from "
                    "`agent trajectories list` (run `agent trajectories reindex` if files moved)",
                    error_code)
    return Path(row["path"])


def load(id_or_path: str, error_code: int = 1) -> TrajectoryFile:
    try:
        trajectory = read_trajectory(locate(id_or_path, error_code))
    except UnsupportedSchemaError as exc:
        raise _fail(str(exc), error_code) from None
    for problem in trajectory.problems:
        print(f"agent: warning: {problem}", file=sys.stderr)
    if trajectory.header is None:
        raise _fail(f"{trajectory.path} has no session_started header; it is not a trajectory",
                    error_code)
    return trajectory


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise _fail(f"--since {value!r} is not a date like 2026-11-23 or 2026-11-23T10:00") \
            from None


@trajectories_app.command("list")
def list_episodes(
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    reward: Annotated[int | None, typer.Option(help="Only this reward (0 or 1).")] = None,
    since: Annotated[str | None, typer.Option(help="Only episodes started since DATE.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most N rows.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List recorded episodes, newest first."""
    store = TrajectoryStore()
    rows = store.list(model=model, reward=reward, since=_since(since), limit=limit)
    store.close()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        started = datetime.fromtimestamp(row["started_at"]).strftime("%Y-%m-%d %H:%M")
        reward_text = "-" if row["reward"] is None else str(row["reward"])
        print(f"{row['id']:24} {started}  {row['model'][:28]:28} {row['task'] or '':20} "
              f"steps={row['steps']:<3} reward={reward_text} {row['exit_status']}")


@trajectories_app.command("show")
def show(
    id_or_path: Annotated[str, typer.Argument(help="Episode id or .jsonl path.")],
    calls: Annotated[bool, typer.Option(help="One item per model call, as sent.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print an episode as a transcript, or (--calls --json) each model call's exact input.
    Secrets are redacted again on the way out (a recording may predate a redaction rule)."""
    trajectory = load(id_or_path)
    redact = Redactor()
    if calls:
        rebuilt = rebuild_calls(trajectory.events)
        if as_json:
            print(json.dumps(redact.data(rebuilt), indent=2, ensure_ascii=False))
        else:
            _print_calls(trajectory, rebuilt, "")
        return
    if as_json:
        events = [e.model_dump(mode="json") for e in trajectory.events]
        print(json.dumps(redact.data(events), indent=2))
        return
    for line in transcript(trajectory):
        print(redact(line))


def _print_calls(trajectory: TrajectoryFile, rebuilt: list[dict], indent: str) -> None:
    """A line per model call; after the call that started a subagent, its calls, indented
    (`show FILE --calls --json` on its file gives them exactly)."""
    links = {link.tool_call_id: link for link in subagent_links(trajectory)}
    for call in rebuilt:
        print(f"{indent}call at step {call['step']}: {len(call['messages'])} messages")
        for tool_call in call["response"].get("tool_calls") or []:
            link = links.get(tool_call["id"])
            if link is None:
                continue
            if not link.path.is_file():
                print(f"{indent}  subagent {link.session_id}: {link.path} is missing")
                continue
            child = read_trajectory(link.path)
            print(f"{indent}  subagent {link.session_id} ({link.data.get('exit_status')}, "
                  f"{link.path}):")
            _print_calls(child, rebuild_calls(child.events), indent + "    ")


def transcript(trajectory: TrajectoryFile) -> Iterator[str]:
    """The episode as readable text, a paragraph per event."""
    header = trajectory.header
    assert header is not None
    yield f"# {header.session_id}  model={header.model}  task={header.task.get('instance_id')}"
    yield f"# repo={header.repo} base={header.base_commit[:12]} branch={header.branch}\n"
    for event in trajectory.events:
        if isinstance(event, UserMessage):
            yield f"[{event.origin}] {event.content}\n"
        elif isinstance(event, AssistantMessage):
            yield f"[assistant, step {event.step}] {event.content or ''}".rstrip()
            for call in event.tool_calls:
                yield f"  -> {call.name}({call.arguments})"
            yield ""
        elif isinstance(event, ToolResult):
            body = event.output if len(event.output) < 1500 else event.output[:1500] + " ..."
            yield f"[{event.name}{' error' if event.is_error else ''}]\n{body}\n"
        elif event.type == "finished":
            yield f"[finished] {event.exit_status}: {event.summary or ''}\n"
        elif isinstance(event, Verified):
            yield f"[verified] reward={event.reward} ({event.test_command})\n"


@trajectories_app.command("reindex")
def reindex(
    root: Annotated[list[Path] | None, typer.Argument(help="Folders to scan.")] = None,
) -> None:
    """Rebuild the SQLite index from the JSONL files."""
    store = TrajectoryStore()
    problems: list[str] = []
    count = store.reindex(root or [data_dir() / "runs"], problems)
    store.close()
    for problem in problems:
        print(f"agent: warning: skipped {problem}", file=sys.stderr)
    print(f"indexed {count} episodes into {store.path}")


def verify_command(
    id_or_path: Annotated[str, typer.Argument(help="Episode id or .jsonl path.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Judge an episode: apply its final patch at the base commit, run the tests afresh."""
    from tools.sandbox import SandboxConfig, SandboxError
    from trajectories.verify import verify_patch

    trajectory = load(id_or_path)
    header = trajectory.header
    assert header is not None
    finished = next((e for e in reversed(trajectory.events) if e.type == "finished"), None)
    patch = finished.patch if finished is not None else ""
    task = header.task
    sandbox = SandboxConfig.model_validate(header.sandbox or {})
    try:
        verdict = verify_patch(Path(header.repo), header.base_commit, patch, task["test_command"],
                               task.get("FAIL_TO_PASS"), task.get("PASS_TO_PASS"), sandbox,
                               test_patch=task.get("test_patch") or "")
    except SandboxError as exc:
        raise _fail(str(exc)) from None
    redact = Redactor()
    test_output = redact(verdict.test_output)
    event = Verified(session_id=header.session_id, step=finished.steps if finished else 0,
                     reward=verdict.reward, test_command=verdict.test_command,
                     test_output=test_output, exit_code=verdict.exit_code,
                     image=verdict.image, duration_s=round(verdict.duration_s, 3))
    with trajectory.path.open("a", encoding="utf-8") as handle:
        handle.write(redact(json.dumps(event.model_dump(mode="json"))) + "\n")
    store = TrajectoryStore()
    store.index_file(trajectory.path)
    store.close()
    if as_json:
        print(json.dumps({"id": header.session_id, "reward": verdict.reward,
                          "test_command": verdict.test_command, "exit_code": verdict.exit_code,
                          "test_output": test_output, "image": verdict.image,
                          "duration_s": round(verdict.duration_s, 3)}, indent=2))
    else:
        print(test_output.rstrip())
        print(f"reward: {verdict.reward}")


@trajectories_app.command("export")
def export(
    fmt: Annotated[str, typer.Option("--format", help="sft, dpo, grpo or swebench.")],
    out: Annotated[Path, typer.Option(help="Output JSONL file.")],
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    instance_id: Annotated[list[str] | None, typer.Option(
        "--instance-id", help="Only this task / SWE-bench instance; repeatable.")] = None,
    since: Annotated[str | None, typer.Option(help="Only episodes started since DATE.")] = None,
    include_failures: Annotated[bool, typer.Option(help="SFT: keep unverified/failed.")] = False,
    pick: Annotated[str, typer.Option(
        help="swebench: which episode of an instance is its prediction: last-verified (the "
        "last one verified, else the last), last, or best (highest reward, then latest).")]
    = "last-verified",
) -> None:
    """Export episodes as training data (TRL formats) or SWE-bench predictions (one per
    instance, as the harness expects), secrets redacted."""
    from trajectories.export import FORMATS, PICKS, export_rows, prediction_problems, write_jsonl

    if fmt not in FORMATS:
        raise _fail(f"--format must be one of {', '.join(FORMATS)}")
    if pick not in PICKS:
        raise _fail(f"--pick must be one of {', '.join(PICKS)}")
    rows = _episode_rows(model, _since(since), instance_id or [])
    redact = Redactor()
    rows_out = [redact.data(row) for row in
                export_rows(_read_files(rows), fmt, include_failures=include_failures,
                            pick=pick)]
    if fmt == "swebench":
        problems = prediction_problems(rows_out)
        if problems:
            raise _fail("the predictions would not pass the SWE-bench harness: "
                        + "; ".join(problems[:5]))
    count = write_jsonl(rows_out, out)
    print(f"wrote {count} {fmt} rows to {out}" + (
        f" (from {len(rows)} episodes, one per instance by --pick {pick})"
        if fmt == "swebench" else ""))


def _episode_rows(model: str | None, since: float | None,
                  instance_ids: list[str]) -> list[dict[str, object]]:
    """Index rows of the episodes to export, oldest first; a warning for each asked-for
    instance that has none."""
    store = TrajectoryStore()
    try:
        rows = list(reversed(store.list(model=model, since=since)))
    finally:
        store.close()
    if not instance_ids:
        return rows
    wanted = set(instance_ids)
    rows = [row for row in rows if row["task"] in wanted]
    for missing in sorted(wanted - {row["task"] for row in rows}):
        print(f"agent: warning: no recorded episode of instance {missing!r}"
              + (f" by model {model!r}" if model else ""), file=sys.stderr)
    return rows


def _read_files(rows: list[dict[str, object]]) -> Iterator[TrajectoryFile]:
    for row in rows:
        path = Path(str(row["path"]))
        try:
            if path.exists():
                yield read_trajectory(path)
        except UnsupportedSchemaError as exc:
            print(f"agent: warning: skipped {exc}", file=sys.stderr)


@trajectories_app.command("import")
def import_command(
    fmt: Annotated[str, typer.Option("--format", help="mini-swe-agent or swe-agent.")],
    paths: Annotated[list[Path], typer.Argument(help="Trajectory files or folders of them.")],
    out: Annotated[Path, typer.Option(help="Output JSONL file (SFT rows).")],
    resolved: Annotated[Path | None, typer.Option(
        help="SWE-bench report (resolved_ids) giving each row its reward.")] = None,
    include_failures: Annotated[bool, typer.Option(
        help="With --resolved: keep unresolved rows too (reward 0).")] = False,
    keep_paths: Annotated[bool, typer.Option(
        help="Keep the other agent's repository root instead of /workspace.")] = False,
) -> None:
    """Convert other agents' trajectories into SFT rows in our format and tool protocol,
    secrets redacted."""
    import tempfile
    from collections.abc import Sequence

    from agent.prompts import system_prompt
    from trajectories.export import write_jsonl
    from trajectories.importers import FORMATS, IMPORTED_TEST_COMMAND, import_rows, resolved_ids

    if fmt not in FORMATS:
        raise _fail(f"--format must be one of {', '.join(FORMATS)}")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise _fail(f"not found: {', '.join(missing)}")
    try:
        ids = resolved_ids(resolved) if resolved else None
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read --resolved {resolved}: {exc}") from None
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as unknown_repo:  # the other agent's repo is not here

        def our_prompt(repo: str, tools: Sequence[str]) -> str:
            return system_prompt(Path(unknown_repo), repo, IMPORTED_TEST_COMMAND, tools=tools)

        rows = import_rows(paths, fmt, problems, resolved=ids, include_failures=include_failures,
                           rewrite_root=not keep_paths, system_prompt=our_prompt)
        redact = Redactor()
        count = write_jsonl((redact.data(row) for row in rows), out)
    for problem in problems:
        print(f"agent: warning: {problem}", file=sys.stderr)
    print(f"wrote {count} sft rows to {out} ({len(problems)} skipped)")
    if count == 0:
        where = ", ".join(map(str, paths))
        raise _fail("nothing was imported: " + ("every trajectory was skipped (reasons above)"
                    if problems else f"no *.traj or *.traj.json files in {where}"))


def replay_command(
    id_or_path: Annotated[str, typer.Argument(help="Episode id or .jsonl path.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Re-run an episode's tool calls in a fresh sandbox and report where observations differ.

    Exit status: 0 when every observation was reproduced, 1 when some differ, 2 on error."""
    from tools.sandbox import SandboxError
    from tools.workspace import WorkspaceError
    from trajectories.replay import CallComparison, ReplayError, replay_trajectory

    trajectory = load(id_or_path, error_code=2)

    def progress(call: CallComparison) -> None:
        if not as_json:
            print(f"step {call.step:>3} {call.name:12} {call.status}", flush=True)
            if call.status == "differs":
                print("    " + call.diff.replace("\n", "\n    "), flush=True)

    try:
        report = replay_trajectory(trajectory, on_call=progress)
    except (ReplayError, SandboxError, WorkspaceError) as exc:
        raise _fail(str(exc), 2) from None
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        for note in report.notes:
            print(f"note: {note}")
        counts = report.to_dict()["counts"]
        print(f"final patch: {report.patch_status}")
        if report.patch_status == "differs":
            print("    " + report.patch_diff.replace("\n", "\n    "))
        print(f"{len(report.calls)} calls: {counts['same']} same, {counts['volatile']} same "
              f"after masking timings/hashes, {counts['differs']} differ -> "
              f"{'reproduced' if report.reproduced else 'NOT reproduced'}")
    if not report.reproduced:
        raise typer.Exit(1)
