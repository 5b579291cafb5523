"""GRPO rollouts: each completion is a whole agent episode in its own sandbox.

`EpisodeRollout` is TRL's `rollout_func`. For the G copies of a prompt it runs G real episodes
(`agent.solve`: worktree, Docker sandbox, tools, recorder, verify) in parallel, with the policy
served in-process by `agent.local_model`, and turns each recorded episode into one sequence:

    prompt_ids      the first model call's prompt (system prompt, tools, task)
    completion_ids  every later token: the model's replies (env_mask 1) and what the
                    environment added between them, tool outputs and chat markup (env_mask 0)
    logprobs        the sampling log-probabilities of the model's tokens (0 elsewhere)

The sequence is built from the token ids recorded at every call (the local model's, or the
server's `prompt_token_ids`, `token_ids` and logprobs: `agent.served_tokens`). A later
call's prompt normally extends the previous prompt + reply; where the chat template re-renders
a reply differently (its JSON re-serialised, say), the rendered tokens replace the generated
ones from the first difference on, with env_mask 0: every token that trains is conditioned on
exactly what the model saw when it sampled it. The reward is the sandbox's verdict (`verify`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.episode import EpisodeConfig
from agent.episode_config import ContextConfig, ToolGrammar
from agent.executor import EpisodeExecutor, ExecutorConfig, RunningEpisode, open_executor
from agent.llm import LLMConfig
from agent.local_model import load_local_model
from agent.solve import SolveResult
from finetune.dynamic_sampling import DynamicSampler
from finetune.episode_jobs import suite_job
from finetune.evaluate import format_errors
from finetune.suite import Suite, SuiteTask
from tools.sandbox import SandboxConfig
from tools.sandbox.pool import SandboxPool
from trajectories.reader import read_trajectory, rebuild_calls
from trajectories.token_ids import common_prefix_length


@dataclass
class EpisodeSample:
    """One episode as a GRPO completion."""

    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    rerendered_tokens: int = 0
    """Generated tokens replaced by the template's rendering (masked out)."""
    truncated: bool = False

    def extend(self, ids: list[int], mask: int, logprobs: list[float] | None = None) -> None:
        self.completion_ids.extend(ids)
        self.env_mask.extend([mask] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))

    def cut(self, length: int) -> None:
        """Keep the first `length` completion tokens."""
        del self.completion_ids[length:], self.env_mask[length:], self.logprobs[length:]


def episode_sample(calls: list[dict[str, Any]], max_completion_tokens: int,
                   end_id: int | None = None) -> EpisodeSample | None:
    """The sequence of an episode from `rebuild_calls` (None when no call has token ids)."""
    records = [c["token_ids"] for c in calls if c.get("token_ids")]
    records = [r for r in records if r.get("prompt_ids") is not None]
    if not records:
        return None
    sample = EpisodeSample(prompt_ids=list(records[0]["prompt_ids"]))
    prompt_length = len(sample.prompt_ids)
    for record in records:
        prompt = record["prompt_ids"]
        sequence = sample.prompt_ids + sample.completion_ids
        shared = common_prefix_length(sequence, prompt)
        if shared < prompt_length:  # the context was rewritten (compaction): stop here
            break
        replaced = sum(sample.env_mask[shared - prompt_length:])
        sample.rerendered_tokens += replaced
        sample.cut(shared - prompt_length)
        sample.extend(prompt[shared:], 0)
        completion = record.get("completion_ids") or []
        logprobs = list(record.get("completion_logprobs") or [])
        logprobs = (logprobs + [0.0] * len(completion))[: len(completion)]
        sample.extend(completion, 1, logprobs)
    if end_id is not None and (not sample.completion_ids or sample.completion_ids[-1] != end_id):
        sample.extend([end_id], 0)
    if len(sample.completion_ids) > max_completion_tokens:
        sample.cut(max_completion_tokens)
        sample.truncated = True
    if not sample.completion_ids:
        sample.extend([end_id if end_id is not None else 0], 0)
    return sample


class Policy(Protocol):
    """Who generates the episodes' model calls, with the token ids training needs."""

    def llm_config(self, sampling: LLMConfig) -> LLMConfig: ...

    def sync(self, trained_model: Any, step: int) -> None: ...


class ServedPolicy:
    """The policy served by an OpenAI-compatible server (`trl vllm-serve`, `vllm serve`):
    calls through litellm, token ids and logprobs from its replies (`agent.served_tokens`);
    with `tool_choice` none (the default) the server renders the tools and the calls are read
    from the model's text here, so the next prompt holds the tokens it generated.
    The trainer keeps its weights equal to the trained ones (TRL's `use_vllm`, server mode),
    so `sync` does nothing here."""

    def __init__(self, api_base: str, model: str | None = None, api_key: str | None = None,
                 tool_choice: str = "none"):
        self.tool_choice = tool_choice
        self.api_base = api_base.rstrip("/")
        if not self.api_base.endswith("/v1"):
            self.api_base += "/v1"
        self.api_key = api_key
        self.model = model or served_model(self.api_base)

    def llm_config(self, sampling: LLMConfig) -> LLMConfig:
        """`sampling` (temperature, reply tokens) served by the server, token ids asked for."""
        return sampling.model_copy(update={
            "model": f"openai/{self.model}", "api_base": self.api_base,
            "api_key": self.api_key or "none", "adapter": None, "tool_choice": self.tool_choice,
            "token_ids": True, "stream": False})

    def sync(self, trained_model: Any, step: int) -> None:
        """Nothing: TRL pushes the weights to a `trl vllm-serve` server before each step."""


def served_model(api_base: str, timeout_s: float = 30.0) -> str:
    """The first model an OpenAI-compatible server lists (`GET /v1/models`)."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api_base}/models", timeout=timeout_s) as reply:
            return str(json.loads(reply.read())["data"][0]["id"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise RuntimeError(f"could not list the models of the rollout server {api_base} "
                           f"({type(exc).__name__}: {exc}); is it running? Name the model "
                           "with --rollout-model") from exc


class InferencePolicy:
    """The policy as the agent calls it: the base model + an adapter, loaded once by
    `agent.local_model` and kept equal to the trainer's LoRA weights (a weight sync, as TRL
    does with a vLLM server)."""

    def __init__(self, base_spec: str, adapter_dir: Path):
        self.base_spec = base_spec
        self.adapter_dir = Path(adapter_dir).resolve()
        self.synced_step = -1

    def llm_config(self, sampling: LLMConfig) -> LLMConfig:
        """`sampling` (temperature, reply tokens) served by this policy, in process."""
        return sampling.model_copy(update={
            "model": f"local/{self.base_spec}", "adapter": str(self.adapter_dir),
            "tool_choice": "required", "retries": 0, "api_base": None})

    def sync(self, trained_model: Any, step: int) -> None:
        """Copy the trainer's adapter weights into the inference copy (once per step)."""
        if step == self.synced_step:
            return
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        local = load_local_model(self.base_spec, str(self.adapter_dir))
        state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(trained_model).items()}
        with local.lock:
            set_peft_model_state_dict(local.model, state)
            local.model.eval()
        self.synced_step = step


def rollout_episode(max_steps: int = 6, max_tokens: int = 128, temperature: float = 1.0,
                    sandbox: SandboxConfig | None = None, tools: str | None = None,
                    repo_map_tokens: int = 512, tool_grammar: ToolGrammar = "calls",
                    ) -> EpisodeConfig:
    """The episode of a GRPO rollout (the policy model is filled in at each step)."""
    return EpisodeConfig(max_steps=max_steps, sandbox=sandbox or SandboxConfig(), tools=tools,
                         llm=LLMConfig(max_tokens=max_tokens, temperature=temperature,
                                       tool_grammar=tool_grammar),
                         context=ContextConfig(repo_map_tokens=repo_map_tokens))


class EpisodeRollout:
    """TRL `rollout_func`: prompts (each repeated G times) -> G sandboxed episodes each."""

    def __init__(self, suite: Suite, tasks: list[SuiteTask], episode: EpisodeConfig,
                 out_dir: Path, workers: int = 4, max_completion_tokens: int = 3072,
                 sampler: DynamicSampler | None = None,
                 executor: ExecutorConfig | None = None):
        self.suite = suite
        self.executor_config = executor or ExecutorConfig()
        self.executor: EpisodeExecutor | None = None
        self.sampler = sampler
        self.episode = episode
        self.workers = workers
        self.max_completion_tokens = max_completion_tokens
        self.pool: SandboxPool | None = None
        self.out_dir = Path(out_dir)
        self.by_prompt = {prompt_text(t): t for t in tasks}
        if len(self.by_prompt) != len(tasks):
            raise ValueError("two tasks of the split share a problem statement; GRPO tells "
                             "tasks apart by their prompt, so make the statements unique")
        self.policy: Policy | None = None
        self.tokenizer: Any = None
        self.calls = 0

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        assert self.policy is not None, "attach the policy before training"
        model = trainer.accelerator.unwrap_model(trainer.model)
        self.policy.sync(model, trainer.state.global_step)
        return self.run(prompts, trainer.state.global_step)

    def run(self, prompts: list[Any], step: int) -> dict[str, list[Any]]:
        """The episodes of `prompts` with the policy as it is, as TRL's rollout output."""
        assert self.policy is not None, "attach the policy before running episodes"
        tasks = self._choose([self.by_prompt[prompt_text_of(p)] for p in prompts])
        llm = self.policy.llm_config(self.episode.llm)
        batch_dir = self.out_dir / f"step-{step:04d}-{self.calls:03d}"
        self.calls += 1
        executor = self._executor()
        portable = executor.kind != "local"
        running = []
        for index, task in enumerate(tasks):
            where = batch_dir / f"{task.instance_id}-{index}"
            config = self.episode.model_copy(update={"llm": llm, "output_dir": where})
            running.append(executor.submit(suite_job(self.suite, task, config, where,
                                                     portable=portable)))
        results = [_finished(episode) for episode in running]
        out = self._collate(prompts, results)
        if self.sampler is not None:
            for task, rewards in _groups(tasks, out["verify_reward"]):
                self.sampler.record(task, rewards)
        return out

    def _choose(self, tasks: list[SuiteTask]) -> list[SuiteTask]:
        """The drawn tasks, each group (a run of one task) redrawn by the sampler when its
        task's recent rewards are all equal."""
        if self.sampler is None:
            return tasks
        chosen: list[SuiteTask] = []
        for task, group in _groups(tasks, tasks):
            replacement = self.sampler.choose(task)
            chosen.extend([replacement] * len(group))
        return chosen

    def _executor(self) -> EpisodeExecutor:
        """Where the episodes run, opened on first use: threads here with warm sandboxes for
        every later group, or a Ray cluster (closed by `close`)."""
        if self.executor is None:
            if self.executor_config.kind == "local" and self.pool is None:
                self.pool = SandboxPool(self.episode.sandbox, size=self.workers)
            self.executor = open_executor(self.executor_config, self.workers, self.pool)
        return self.executor

    def close(self) -> None:
        """Stop the executor and remove the warm sandboxes; safe to call twice."""
        if self.executor is not None:
            self.executor.close()
            self.executor = None
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def _collate(self, prompts: list[Any],
                 results: list[tuple[SolveResult | None, str | None]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {k: [] for k in (
            "prompt_ids", "completion_ids", "logprobs", "env_mask", "verify_reward",
            "format_score", "episode_steps", "rerendered_tokens", "episode_error")}
        end_id = self.tokenizer.eos_token_id if self.tokenizer is not None else None
        for prompt, (result, error) in zip(prompts, results, strict=True):
            sample = None
            if result is not None:
                calls = rebuild_calls(read_trajectory(Path(result.trajectory_path)).events)
                sample = episode_sample(calls, self.max_completion_tokens, end_id)
            if sample is None:  # nothing was generated: an empty, unscored completion
                error = error or (result.error if result else None) or "no model call recorded"
                sample = EpisodeSample(prompt_ids=self._prompt_ids(prompt))
                sample.extend([end_id if end_id is not None else 0], 0)
            scored = result is not None and error is None
            calls_made, bad = (0, 0)
            if result is not None and scored:
                calls_made, bad = format_errors(Path(result.trajectory_path))
            out["prompt_ids"].append(sample.prompt_ids)
            out["completion_ids"].append(sample.completion_ids)
            out["logprobs"].append(sample.logprobs)
            out["env_mask"].append(sample.env_mask)
            out["verify_reward"].append(float(result.reward) if scored and result else None)
            out["format_score"].append((1 - bad / calls_made) if calls_made else 0.0)
            out["episode_steps"].append(result.usage.steps if result else 0)
            out["rerendered_tokens"].append(sample.rerendered_tokens)
            out["episode_error"].append(error)
        return out

    def _prompt_ids(self, prompt: Any) -> list[int]:
        from agent.tool_protocol import render_chat_tokens

        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        return render_chat_tokens(messages, None, self.tokenizer)


def _finished(episode: RunningEpisode) -> tuple[SolveResult | None, str | None]:
    """A submitted episode's result, or why it has none (an infrastructure failure, a lost
    Ray worker): that episode is not scored."""
    try:
        return episode.future.result(), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _groups(tasks: list[SuiteTask], values: list[Any]) -> list[tuple[SuiteTask, list[Any]]]:
    """Consecutive runs of one task (a GRPO group) with their `values`."""
    groups: list[tuple[SuiteTask, list[Any]]] = []
    for task, value in zip(tasks, values, strict=True):
        if groups and groups[-1][0].instance_id == task.instance_id:
            groups[-1][1].append(value)
        else:
            groups.append((task, [value]))
    return groups


def prompt_text(task: SuiteTask) -> str:
    """The GRPO dataset prompt of a task: the task message the agent sends."""
    from agent.prompts import task_message

    return task_message(task.problem_statement)


def prompt_text_of(prompt: Any) -> str:
    if isinstance(prompt, list):
        return str(prompt[-1]["content"])
    return str(prompt)
