"""Fine-tuning end to end, real but tiny: the curriculum, `agent eval` with the oracle in real
sandboxes, oracle trajectories as SFT data, SFT and GRPO steps (a tiny random model, and the
real SmolLM2 for two steps), merging, reports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from finetune.curriculum import KINDS, TRAIN_PACKAGES, generate_curriculum, vocabulary
from finetune.evaluate import EpisodeOutcome, summarize
from finetune.rollout import episode_sample
from finetune.suite import SuiteTask, checkout_task, load_suite, write_suite

pytestmark = pytest.mark.timeout(900)


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "APPRENTICE_HOME": str(home), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, timeout=900, env=env)


def lora_b_norm(adapter_dir: Path) -> float:
    from safetensors.torch import load_file

    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return sum(float(v.abs().sum()) for k, v in weights.items() if "lora_B" in k)


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An apprentice home for the module-scoped fixtures (trajectories, index, worktrees)."""
    home = tmp_path_factory.mktemp("finetune-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("APPRENTICE_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_curriculum(tmp_path_factory.mktemp("suite") / "tiny", train=3, test=2,
                               seed=7)


@pytest.fixture(scope="module")
def oracle_rows(suite_dir: Path, module_home: Path, docker_ready: None,
                tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The oracle's verified conversations on the tiny suite's train split."""
    from finetune.warm_start import oracle_trajectories

    report, rows = oracle_trajectories(load_suite(suite_dir),
                                       tmp_path_factory.mktemp("oracle"), workers=3)
    assert report.summary["pass@1"] == 1.0, report.episodes
    return rows


@pytest.fixture(scope="module")
def tiny_model(model_ready: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer (and chat template)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(model_ready)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=8192, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_varied_train_tasks_leave_the_test_split_alone_and_anchor_recurring_edits(
        tmp_path: Path) -> None:
    plain = load_suite(generate_curriculum(tmp_path / "p", train=28, test=14, vary_train=False))
    varied = load_suite(generate_curriculum(tmp_path / "v", train=28, test=14))
    assert not varied.problems
    assert [(t.instance_id, t.patch) for t in plain.split("test")] == \
        [(t.instance_id, t.patch) for t in varied.split("test")]
    assert {t.patch for t in plain.split("train")} != {t.patch for t in varied.split("train")}
    anchored = 0
    for task in varied.split("train"):
        edit = task.oracle[2]
        if edit["name"] != "str_replace":
            continue
        args = edit["arguments"]
        repo = Path(checkout_task(varied, task, tmp_path / task.instance_id).repo)
        source = (repo / args["path"]).read_text()
        assert source.count(args["old_str"]) == 1, task.instance_id
        subprocess.run(["git", "apply", "-"], input=task.patch.encode(), cwd=repo, check=True)
        assert source.replace(args["old_str"], args["new_str"]) == \
            (repo / args["path"]).read_text(), task.instance_id
        anchored += args["old_str"].startswith("def ")
    assert anchored >= 2  # twins make the smallest edit ambiguous; the oracle anchors on `def`


def test_curriculum_splits_are_disjoint_and_each_test_judges_its_fix(tmp_path: Path) -> None:
    suite = load_suite(generate_curriculum(tmp_path / "c", train=len(KINDS), test=len(KINDS)))
    train, test = suite.split("train"), suite.split("test")
    assert len(train) == len(test) == len(KINDS) and not suite.problems
    assert {t.model_extra["kind"] for t in train} == {t.model_extra["kind"] for t in test} \
        == set(KINDS)
    assert not vocabulary("train") & vocabulary("test")

    def names(tasks: list[SuiteTask]) -> set[str]:  # functions, tests, modules, packages
        found = set()
        for task in tasks:
            words = re.findall(r"[a-z][a-z0-9_]*", task.problem_statement)
            found |= {w for w in words if "_" in w}
            found.add(task.model_extra["domain"])
        return found

    assert not names(train) & names(test)
    assert len({t.instance_id for t in suite.tasks}) == len(suite.tasks)
    assert len({t.problem_statement for t in suite.tasks}) == len(suite.tasks)
    # The listed tests fail at the base commit and pass with the gold patch.
    for task in (train[0], test[len(KINDS) - 1]):
        repo = checkout_task(suite, task, tmp_path / task.instance_id).repo
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   *task.FAIL_TO_PASS, *task.PASS_TO_PASS]
        assert subprocess.run(command, cwd=repo, capture_output=True).returncode != 0
        subprocess.run(["git", "apply", "-"], input=task.patch.encode(), cwd=repo, check=True)
        assert subprocess.run(command, cwd=repo, capture_output=True).returncode == 0


def test_varied_packages_leave_the_test_split_alone_and_move_the_train_code(
        tmp_path: Path) -> None:
    plain = load_suite(generate_curriculum(tmp_path / "p", train=len(KINDS), test=4,
                                           vary_train=False))
    moved = load_suite(generate_curriculum(tmp_path / "m", train=len(KINDS), test=4,
                                           vary_train=False, vary_packages=True))
    assert [(t.instance_id, t.patch) for t in plain.split("test")] == \
        [(t.instance_id, t.patch) for t in moved.split("test")]
    assert json.loads((tmp_path / "m" / "suite.json").read_text())["vary_packages"] is True
    packages = set()
    for task in moved.split("train"):
        package = task.patch.split("+++ b/", 1)[1].split("/", 1)[0]
        assert package in TRAIN_PACKAGES, task.instance_id
        packages.add(package)
        paths = {call["arguments"].get("path", "") for call in task.oracle or []}
        assert any(path.startswith(f"{package}/") for path in paths), task.instance_id
    assert len(packages) > 4
    task = moved.split("train")[0]
    repo = checkout_task(moved, task, tmp_path / task.instance_id).repo
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *task.FAIL_TO_PASS]
    assert subprocess.run(command, cwd=repo, capture_output=True).returncode != 0
    subprocess.run(["git", "apply", "-"], input=task.patch.encode(), cwd=repo, check=True)
    assert subprocess.run(command, cwd=repo, capture_output=True).returncode == 0


@pytest.mark.usefixtures("docker_ready")
def test_recovering_oracles_pass_and_train_only_the_recovery(
        tmp_path: Path, module_home: Path, model_ready: Path) -> None:
    from transformers import AutoTokenizer

    from finetune.sft_data import tokenize_row
    from finetune.warm_start import oracle_trajectories

    plain = load_suite(generate_curriculum(tmp_path / "p", train=len(KINDS), test=3,
                                           vary_train=False))
    suite = load_suite(generate_curriculum(tmp_path / "m", train=len(KINDS), test=3,
                                           vary_train=False, mistake_share=1.0))
    assert [(t.instance_id, t.oracle) for t in plain.split("test")] == \
        [(t.instance_id, t.oracle) for t in suite.split("test")]
    report, rows = oracle_trajectories(suite, tmp_path / "oracle", workers=3,
                                       repo_map_tokens=0)
    assert report.summary["pass@1"] == 1.0 and len(rows) == len(KINDS), report.episodes
    tokenizer = AutoTokenizer.from_pretrained(model_ready)
    kinds = {t.instance_id: t.kind for t in suite.split("train")}
    refusals = {}
    for row in rows:
        results = [m["content"] for m in row["messages"] if m["role"] == "tool"]
        refused = [r for r in results if r.startswith("Error: ")]
        encoded = tokenize_row(row, tokenizer)
        trained = tokenizer.decode([t for t, m in zip(encoded["input_ids"],
                                                      encoded["assistant_masks"], strict=True)
                                    if m])
        calls = sum(len(m.get("tool_calls") or []) for m in row["messages"])
        assert trained.count("<tool_call>") == calls - len(refused)  # refused: context only
        if kinds[row["task"]] == "missing_file":
            assert not refused and results[0].startswith("No matches"), results
            continue
        assert len(refused) == 1, results
        refusals[row["task"]] = refused[0]
    unchanged = {t for t, r in refusals.items() if "nothing would change" in r}
    bare = {t for t, r in refusals.items()
            if re.fullmatch(r"Error: \w+\.py does not exist\. Did you mean \w+/\w+\.py\?", r)}
    constant = {t for t, r in refusals.items()  # the right value, but not what the file holds
                if re.search(r"not found in .*closest line is \d+: `[A-Z_]+ = \d+`", r)}
    assert unchanged and bare and unchanged | bare | constant == set(refusals), refusals
    assert constant == {t for t in refusals if kinds[t] == "wrong_constant"} != set()


def test_an_episode_that_errored_counts_as_a_failure_not_as_missing() -> None:
    summary = summarize([
        EpisodeOutcome("a", 0, reward=1, exit_status="submitted"),
        EpisodeOutcome("b", 0, error="OSError: [Errno 24] Too many open files"),
        EpisodeOutcome("c", 0, error="no bundle", broken=True),
    ])
    assert summary["pass@1"] == 0.5 and summary["pass@k"] == 0.5
    assert summary["tasks"] == 2 and summary["episodes"] == 2 and summary["errors"] == 1
    assert summary["broken_tasks"] == ["c"]


@pytest.mark.usefixtures("docker_ready")
def test_eval_with_the_oracle_reports_broken_tasks_without_stopping(suite_dir: Path,
                                                                    tmp_path: Path) -> None:
    good = load_suite(suite_dir).split("train")[0]
    broken_bundle = good.model_copy(update={"instance_id": "no-bundle",
                                            "repo_path": "repos/missing.bundle"})
    bad_commit = good.model_copy(update={"instance_id": "bad-commit", "base_commit": "f" * 40})
    copy = tmp_path / "suite"
    (copy / "repos").mkdir(parents=True)
    (copy / good.repo_path).write_bytes((suite_dir / good.repo_path).read_bytes())
    write_suite(copy, [good, broken_bundle, bad_commit])
    with (copy / "tasks.jsonl").open("a") as handle:
        handle.write('{"instance_id": "no-statement"}\n')
    home = tmp_path / "home"
    proc = run_cli("eval", str(copy), "--model", "oracle", "--split", "train", "--json",
                   "--save", str(tmp_path / "before.json"), home=home)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    summary = report["summary"]
    assert summary["tasks"] == 1 and summary["pass@1"] == 1.0 and summary["pass@k"] == 1.0
    assert summary["broken_tasks"] == ["bad-commit", "no-bundle"]
    assert summary["format_error_rate"] == 0.0 and summary["mean_steps"] == 5
    assert any("tasks.jsonl:4" in p for p in report["problems"])
    assert "warning: tasks.jsonl:4" in proc.stderr
    episode = next(e for e in report["episodes"] if e["reward"] is not None)
    events = [json.loads(line) for line in Path(episode["trajectory_path"]).read_text()
              .splitlines()]
    assert events[-1]["type"] == "verified" and events[-1]["reward"] == 1
    assert json.loads((tmp_path / "before.json").read_text())["summary"] == summary


SETUP_MARKER = "/usr/local/share/apprentice-eval-setup"


@pytest.mark.usefixtures("docker_ready")
def test_eval_runs_each_episode_and_its_verdict_in_the_image_the_tasks_setup_builds(
        suite_dir: Path, tmp_path: Path) -> None:
    from finetune.evaluate import EvalOptions, evaluate
    from trajectories.reader import read_trajectory

    good = load_suite(suite_dir).split("train")[0]
    needs_setup = good.model_copy(update={  # its tests pass only where the setup ran
        "instance_id": "needs-setup", "setup": f"echo prepared > {SETUP_MARKER}",
        "test_command": f"test -f {SETUP_MARKER} && {good.test_command}"})
    copy = tmp_path / "suite"
    (copy / "repos").mkdir(parents=True)
    (copy / good.repo_path).write_bytes((suite_dir / good.repo_path).read_bytes())
    write_suite(copy, [needs_setup])
    report = evaluate(load_suite(copy), EvalOptions(model="oracle", split="train", workers=1,
                                                    output_dir=tmp_path / "eval"))
    episode = report.episodes[0]
    assert episode.reward == 1 and episode.exit_status == "finished", episode
    header = read_trajectory(Path(episode.trajectory_path or "")).header
    assert header is not None and header.task["setup"] == f"echo prepared > {SETUP_MARKER}"
    assert header.sandbox["image"].startswith("apprentice-setup:")


def test_episode_sample_masks_environment_and_rerendered_tokens() -> None:
    def call(prompt: list[int], completion: list[int]) -> dict[str, Any]:
        return {"token_ids": {"prompt_ids": prompt, "completion_ids": completion,
                              "completion_logprobs": [-0.5] * len(completion)}}

    calls = [call([1, 2, 3], [4, 5]), call([1, 2, 3, 4, 9, 6, 7], [8]),
             call([1, 2, 3, 4, 9, 6, 7, 8, 10], [11, 12])]
    sample = episode_sample(calls, max_completion_tokens=100, end_id=0)
    assert sample is not None and sample.prompt_ids == [1, 2, 3]
    assert sample.completion_ids == [4, 9, 6, 7, 8, 10, 11, 12, 0]
    assert sample.env_mask == [1, 0, 0, 0, 1, 0, 1, 1, 0]
    assert sample.logprobs == [-0.5, 0, 0, 0, -0.5, 0, -0.5, -0.5, 0]
    assert sample.rerendered_tokens == 1
    cut = episode_sample(calls, max_completion_tokens=4, end_id=0)
    assert cut is not None and cut.truncated and len(cut.completion_ids) == 4
    compacted = episode_sample([call([1, 2, 3], [4]), call([1, 7], [8])], 100)
    assert compacted is not None and compacted.completion_ids == [4]


def test_oracle_trajectories_train_only_the_assistant_tokens(oracle_rows: list[dict[str, Any]],
                                                             model_ready: Path) -> None:
    from transformers import AutoTokenizer

    from agent.models import default_tool_set
    from finetune.sft_data import row_tools, tokenize_row
    from tools.control import select_tools

    assert len(oracle_rows) == 3 and all(r["reward"] == 1 for r in oracle_rows)
    offered = [t["function"]["name"] for t in row_tools(oracle_rows[0]) or []]
    assert offered == [t.name for t in select_tools(default_tool_set("local/smollm2-135m"))]
    tokenizer = AutoTokenizer.from_pretrained(model_ready)
    row = tokenize_row(oracle_rows[0], tokenizer)
    ids, mask = row["input_ids"], row["assistant_masks"]
    trained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    ignored = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    calls = sum(len(m.get("tool_calls") or []) for m in oracle_rows[0]["messages"])
    assert trained.count("<tool_call>") == calls and trained.count("<|im_end|>") == calls
    assert "<tool_response>" not in trained and "Solve this issue" not in trained
    assert ignored.count("<tool_response>\n") == calls - 1 and "# Tools" in ignored


def test_rows_through_the_last_edit_end_on_the_repair(oracle_rows: list[dict[str, Any]]) -> None:
    from finetune.sft_data import through_last_edit

    def called(row: dict[str, Any]) -> list[str]:
        return [c["function"]["name"] for m in row["messages"] for c in m.get("tool_calls") or []]

    for row in oracle_rows:
        cut = through_last_edit(row)
        assert cut is not None and cut["tools"] == row["tools"]
        names = called(cut)
        assert names[-1] in ("str_replace", "insert", "create") and "finish" not in names
        assert names == called(row)[:len(names)] and cut["messages"][-1]["role"] == "assistant"
        assert cut["messages"] == row["messages"][:len(cut["messages"])]
    before_edit = {**oracle_rows[0], "messages": oracle_rows[0]["messages"][:2]}
    assert through_last_edit(before_edit) is None


def test_sft_on_a_tiny_model_trains_the_adapter_which_loads_merges_and_reports(
        oracle_rows: list[dict[str, Any]], tiny_model: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from agent.local_model import load_local_model
    from finetune.merge import merge_adapter
    from finetune.report import write_report

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in oracle_rows[:2]))
    out = tmp_path / "sft-run"
    proc = run_cli("finetune", "sft", "--data", str(data), "--model", str(tiny_model),
                   "--output", str(out), "--max-steps", "2", "--max-length", "512",
                   "--truncation", "keep_end", "--learning-rate", "0.01", "--lora-r", "4",
                   "--through-edit", home=tmp_path / "home")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert lora_b_norm(out) > 0  # LoRA B starts at zero: training moved it
    manifest = json.loads((out / "apprentice-finetune.json").read_text())
    assert manifest["kind"] == "sft" and manifest["base_model_path"] == str(tiny_model)
    assert manifest["data"]["rows"] == 2 and len(manifest["data"]["sha256"]) == 64
    assert manifest["data"]["source"].endswith("through the last edit")
    assert manifest["config"]["lora"]["r"] == 4 and manifest["metrics"]["steps"] == 2
    history = json.loads((out / "log_history.json").read_text())
    assert [h["loss"] for h in history if "loss" in h]
    assert list((out / "runs").rglob("events.out.tfevents.*"))
    # The agent's local provider loads it; the adapter changes the model's output.
    prompt = torch.tensor([[1, 2, 3, 4, 5]])
    base = load_local_model(str(tiny_model)).model
    tuned = load_local_model(str(tiny_model), str(out)).model
    with torch.no_grad():
        base_logits, tuned_logits = base(prompt).logits, tuned(prompt).logits
    assert not torch.allclose(base_logits, tuned_logits)
    merged = AutoModelForCausalLM.from_pretrained(merge_adapter(out), dtype=torch.float32)
    with torch.no_grad():
        assert torch.allclose(merged(prompt).logits, tuned_logits, atol=1e-4)
    (out / "evals").mkdir()
    for label, rate in (("before", 0.0), ("after", 0.5)):
        (out / "evals" / f"{label}.json").write_text(json.dumps({
            "model": "local/x", "adapter": None, "split": "test",
            "summary": {"tasks": 2, "episodes": 2, "pass@1": rate, "pass@k": rate,
                        "format_error_rate": 0.1, "mean_steps": 4.0, "mean_tokens": 2000.0}}))
    (out / "evals" / "demo.json").write_text(json.dumps({"reward": 1, "summary": "fixed"}))
    png, md = write_report(out)  # a solve result beside the reports is not one of them
    assert png.stat().st_size > 1000
    assert "| before |" in md.read_text() and "| after |" in md.read_text()
    assert "| demo |" not in md.read_text()


def test_grpo_rollouts_run_the_configured_episode(tmp_path: Path) -> None:
    from finetune.grpo import GRPORunConfig, grpo_episode

    config = GRPORunConfig(suite=tmp_path, output_dir=tmp_path, tools="core,locate",
                           tool_grammar="edits", episode_max_steps=5, max_tokens=200,
                           temperature=0.9, repo_map_tokens=0)
    episode = grpo_episode(config)
    assert (episode.max_steps, episode.tools, episode.context.repo_map_tokens) == (
        5, "core,locate", 0)
    assert (episode.llm.tool_grammar, episode.llm.max_tokens, episode.llm.temperature) == (
        "edits", 200, 0.9)
    assert grpo_episode(config.model_copy(update={"tool_grammar": "calls"})).llm.tool_grammar \
        == "calls"


@pytest.mark.usefixtures("docker_ready")
def test_grpo_step_scores_sandboxed_episodes_and_masks_tool_outputs(
        suite_dir: Path, tiny_model: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoTokenizer

    from finetune.grpo import ROLLOUT_ADAPTER, GRPORunConfig, run_grpo
    from trajectories.reader import read_trajectory, rebuild_calls

    def token_reward(prompts: list[Any], completions: list[Any], completion_ids: list[Any],
                     **kwargs: Any) -> list[float]:
        """Differs within the group (two sampled episodes, two token sequences; their lengths
        may be equal), so the step has an advantage to follow."""
        return [(len(ids) + sum(ids) % 97) / 100 for ids in completion_ids]

    from finetune.suite import SuiteError

    out = tmp_path / "grpo"
    config = GRPORunConfig(suite=suite_dir, limit=1, model=str(tiny_model), output_dir=out,
                           num_generations=2, max_steps=1, episode_max_steps=2, max_tokens=12,
                           learning_rate=0.01)
    with pytest.raises(SuiteError, match="after skipping 3"):
        run_grpo(config.model_copy(update={"skip": 3}))
    metrics = run_grpo(config, extra_rewards=[token_reward])
    assert metrics["steps"] == 1 and metrics["episodes"] == 2
    assert metrics["groups"] == 1 and metrics["groups_all_equal"] == 1  # both failed the tests
    assert lora_b_norm(out / ROLLOUT_ADAPTER) == 0 < lora_b_norm(out)
    logged = next(h for h in json.loads((out / "log_history.json").read_text()) if "loss" in h)
    assert logged["rewards/verify_reward/mean"] == 0.0 and "rewards/format_reward/mean" in logged
    assert logged["groups/all_equal_total"] == 1.0 and logged["episode/steps"] >= 1
    trajectories = sorted((out / "rollouts").rglob("*.jsonl"))
    assert len(trajectories) == 2
    first = load_suite(suite_dir).split("train")[0].instance_id
    assert all(first in str(path) for path in trajectories)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    for path in trajectories:
        events = read_trajectory(path).events
        verdict = events[-1]
        assert verdict.type == "verified" and verdict.reward == 0
        assert "failed" in verdict.test_output or "error" in verdict.test_output
        sample = episode_sample(rebuild_calls(events), 4096, tokenizer.eos_token_id)
        assert sample is not None
        model_text = tokenizer.decode([t for t, m in zip(sample.completion_ids,
                                                         sample.env_mask, strict=True) if m])
        env_text = tokenizer.decode([t for t, m in zip(sample.completion_ids,
                                                       sample.env_mask, strict=True) if not m])
        assert "<tool_response>" in env_text and "<tool_response>" not in model_text
        assert sum(sample.env_mask) > 0


@pytest.mark.usefixtures("docker_ready")
def test_grpo_redraws_a_task_whose_recent_rewards_are_all_equal(
        suite_dir: Path, tiny_model: Path, tmp_path: Path) -> None:
    from finetune.grpo import GRPORunConfig, run_grpo

    first, second = load_suite(suite_dir).split("train")[:2]
    history = tmp_path / "sft-eval.json"  # the starting policy failed `first` twice
    history.write_text(json.dumps({"episodes": [
        {"instance_id": first.instance_id, "reward": 0},
        {"instance_id": first.instance_id, "reward": 0}]}))
    out = tmp_path / "grpo"
    metrics = run_grpo(GRPORunConfig(
        suite=suite_dir, limit=2, model=str(tiny_model), output_dir=out, num_generations=2,
        max_steps=1, episode_max_steps=1, max_tokens=8, task_history=history, seed=0,
        repo_map_tokens=0))
    assert metrics["steps"] == 1 and metrics["groups_redrawn"] == 1
    assert metrics["groups"] == 1 and metrics["groups_with_signal"] == 0
    trajectories = sorted((out / "rollouts").rglob("*.jsonl"))
    assert len(trajectories) == 2
    assert all(second.instance_id in str(path) for path in trajectories)
    # The episodes' prompt is the one the policy is trained and evaluated with: no map here.
    from trajectories.reader import read_trajectory, rebuild_calls
    system = rebuild_calls(read_trajectory(trajectories[0]).events)[0]["messages"][0]
    assert system["role"] == "system" and "A map of the repository" not in system["content"]


@pytest.mark.model
@pytest.mark.usefixtures("docker_ready")
def test_smollm2_two_sft_steps_then_the_agent_runs_with_the_adapter(
        oracle_rows: list[dict[str, Any]], model_ready: Path, tmp_path: Path) -> None:
    import litellm

    from agent.local_model import register_local_provider, token_ids_of
    from finetune.sft import SFTRunConfig, run_sft

    out = tmp_path / "smollm2-sft"
    metrics = run_sft(oracle_rows[:2], SFTRunConfig(
        model="smollm2-135m", output_dir=out, max_steps=2, max_length=320,
        truncation_mode="keep_end", learning_rate=1e-3))
    assert metrics["steps"] == 2 and lora_b_norm(out) > 0
    register_local_provider()
    messages = [{"role": "user", "content": "Say hi."}]
    replies = [litellm.completion(model="local/smollm2-135m", messages=messages, max_tokens=3,
                                  temperature=0, **extra)
               for extra in ({}, {"adapter": str(out)})]
    base, tuned = (token_ids_of(r) for r in replies)
    assert base and tuned and tuned["adapter_path"] == str(out.resolve())
    assert base["completion_logprobs"] != tuned["completion_logprobs"]
