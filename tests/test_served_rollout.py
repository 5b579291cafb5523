"""GRPO rollouts from a served policy (`--rollout-server`): the episodes' model calls go through
litellm to an OpenAI-compatible server answering as vLLM does (`agent.scripted_vllm`: the
task's oracle script, token ids rendered by SmolLM2's chat template, made-up logprobs), and
the GRPO sample is built from the ids and logprobs in its replies. Docker, git, the sandbox,
the recorder and verify are real; so is a GRPO step on a tiny random model from those samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.executor_config import ExecutorConfig
from agent.llm import LLMClient, LLMConfig, ModelError
from agent.scripted_model import ScriptedModelServer, tool_call
from agent.scripted_vllm import ScriptedVLLMServer
from finetune.curriculum import generate_curriculum
from finetune.oracle import ORACLE_TOOL_SET
from finetune.rollout import EpisodeRollout, ServedPolicy, prompt_text, rollout_episode
from finetune.suite import Suite, SuiteTask, load_suite
from trajectories.reader import read_trajectory

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Suite:
    return load_suite(generate_curriculum(tmp_path_factory.mktemp("suite") / "tiny", train=1,
                                          test=0, seed=7))


@pytest.fixture(scope="module")
def tokenizer(model_ready: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_ready)


def oracle_steps(task: SuiteTask) -> list[dict[str, Any]]:
    return [{"tool_calls": [tool_call(step["name"], step["arguments"])]} for step in task.oracle]


def served_rollout(suite: Suite, task: SuiteTask, server: ScriptedVLLMServer, out: Path,
                   tokenizer: Any, executor: ExecutorConfig | None = None) -> EpisodeRollout:
    episode = rollout_episode(max_steps=len(task.oracle) + 1, max_tokens=64,
                              tools=ORACLE_TOOL_SET)
    rollout = EpisodeRollout(suite, [task], episode, out, workers=1, executor=executor)
    rollout.policy = ServedPolicy(server.url)  # the model's name from GET /v1/models
    rollout.tokenizer = tokenizer
    return rollout


def run_served_episode(suite: Suite, task: SuiteTask, out: Path, tokenizer: Any,
                       executor: ExecutorConfig | None = None
                       ) -> tuple[dict[str, list[Any]], ScriptedVLLMServer]:
    """One rollout episode of `task` against the oracle served as vLLM would: TRL's output."""
    with ScriptedVLLMServer(oracle_steps(task), tokenizer) as server:
        rollout = served_rollout(suite, task, server, out, tokenizer, executor)
        try:
            return rollout.run([[{"role": "user", "content": prompt_text(task)}]], step=0), \
                server
        finally:
            rollout.close()


def assert_trains_on_the_served_tokens(out: dict[str, list[Any]], server: ScriptedVLLMServer,
                                       task: SuiteTask, tokenizer: Any) -> None:
    """The sample is the server's prompt ids, then each reply's ids and logprobs (trained),
    with what the environment added between them (masked, logprob 0)."""
    assert out["episode_error"] == [None] and out["verify_reward"] == [1.0]
    assert all(body["logprobs"] is True and body["return_token_ids"] is True
               and body["return_tokens_as_token_ids"] is True and body["model"] == "policy"
               and body["tool_choice"] == "none" and body["tools"]  # calls read from the text
               and not body.get("stream") for body in server.requests)
    served = server.served
    assert len(served) == len(task.oracle)  # its last call, finish, ends the episode
    ids, mask, logprobs = out["completion_ids"][0], out["env_mask"][0], out["logprobs"][0]
    assert out["prompt_ids"][0] == served[0]["prompt_ids"]
    assert out["rerendered_tokens"] == [0]
    assert [t for t, m in zip(ids, mask, strict=True) if m] == \
        [t for call in served for t in call["completion_ids"]]
    assert [lp for lp, m in zip(logprobs, mask, strict=True) if m] == \
        [lp for call in served for lp in call["logprobs"]]
    assert all(lp == 0 for lp, m in zip(logprobs, mask, strict=True) if not m)
    sequence = out["prompt_ids"][0] + ids
    for call in served:  # every prompt the server read is a prefix of the trained sequence
        assert sequence[:len(call["prompt_ids"])] == call["prompt_ids"]
    env_text = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    assert "<tool_response>" in env_text and "add_prices" in env_text


@pytest.mark.usefixtures("docker_ready")
def test_a_served_rollout_trains_on_the_servers_token_ids_and_logprobs(
        suite: Suite, tokenizer: Any, tmp_path: Path) -> None:
    task = suite.split("train")[0]
    out, server = run_served_episode(suite, task, tmp_path / "rollouts", tokenizer)
    assert_trains_on_the_served_tokens(out, server, task, tokenizer)
    trajectory = next((tmp_path / "rollouts").rglob("*.jsonl"))
    assistant = [e for e in read_trajectory(trajectory).events if e.type == "assistant_message"]
    assert assistant and all(e.token_ids and e.token_ids["model_path"] == "openai/policy"
                             for e in assistant)


def test_token_ids_come_from_the_logprobs_or_else_from_the_choices_token_ids() -> None:
    from agent.served_tokens import served_token_ids

    def reply(tokens: list[str], token_ids: list[int] | None) -> dict[str, Any]:
        content = [{"token": t, "logprob": -0.5 * (i + 1)} for i, t in enumerate(tokens)]
        return {"prompt_token_ids": [1, 2], "choices": [
            {"token_ids": token_ids, "logprobs": {"content": content}}]}

    record = served_token_ids(reply(["token_id:7", "token_id:9"], None), "openai/m")
    assert record == {"prompt_ids": [1, 2], "completion_ids": [7, 9],
                      "completion_logprobs": [-0.5, -1.0], "model_path": "openai/m",
                      "adapter_path": None}
    plain = served_token_ids(reply(["he", "llo"], [7, 9]), "openai/m")  # tokens as text
    assert plain["completion_ids"] == [7, 9] and plain["completion_logprobs"] == [-0.5, -1.0]


def test_a_server_that_sends_no_token_ids_is_a_model_error_that_says_what_to_run() -> None:
    with ScriptedModelServer([{"content": "plain"}], model="plain") as server:
        client = LLMClient(LLMConfig(model="openai/plain", api_base=server.url, retries=0,
                                     token_ids=True))
        with pytest.raises(ModelError, match="vLLM 0.10.2 or later"):
            client.complete([{"role": "user", "content": "hi"}], [])
        assert server.requests[0]["return_token_ids"] is True


@pytest.mark.usefixtures("docker_ready")
def test_a_grpo_step_trains_from_a_served_policy(suite: Suite, tokenizer: Any,
                                                 model_ready: Path, tmp_path: Path) -> None:
    """Two episodes in turn: the first plays the oracle and passes, the second finds the
    script spent and fails, so the group has a signal; the trainer's tiny random model shares
    SmolLM2's tokenizer, so the served ids are its ids."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from finetune.grpo import GRPORunConfig, run_grpo

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=8192, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    tiny = tmp_path / "tiny"
    LlamaForCausalLM(config).save_pretrained(tiny)
    tokenizer.save_pretrained(tiny)
    task = suite.split("train")[0]
    out = tmp_path / "grpo"
    with ScriptedVLLMServer(oracle_steps(task), tokenizer) as server:
        metrics = run_grpo(GRPORunConfig(
            suite=suite.path, model=str(tiny), output_dir=out, num_generations=2, workers=1,
            max_steps=1, episode_max_steps=len(task.oracle) + 1, max_tokens=64,
            learning_rate=0.01, tools=ORACLE_TOOL_SET, dynamic_sampling=False,
            rollout_server=server.url, rollout_server_sync=False))
    assert metrics["steps"] == 1 and metrics["episodes"] == 2
    assert metrics["groups_with_signal"] == 1
    with pytest.raises(ValueError, match="--rollout-server URL"):
        GRPORunConfig(suite=suite.path, output_dir=out, executor=ExecutorConfig(kind="ray"))
    logged = next(h for h in json.loads((out / "log_history.json").read_text()) if "loss" in h)
    assert logged["rewards/verify_reward/mean"] == 0.5
    from safetensors.torch import load_file

    weights = load_file(str(out / "adapter_model.safetensors"))
    assert sum(float(v.abs().sum()) for k, v in weights.items() if "lora_B" in k) > 0
