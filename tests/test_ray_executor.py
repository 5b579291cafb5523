"""Episodes on a real Ray cluster (`--executor ray`): a head on 127.0.0.1 and two worker nodes
of one CPU each, started by this module. The oracle (a scripted model server started where
the episode runs) plays curriculum tasks; Docker, git, the recorder and verify are real.

The Ray executor must give the rewards and trajectories the local executor gives (ids,
times and temporary paths aside), land them in the driver's store and index, rerun an
episode whose worker was killed, and report one killed on every try as lost, leaving nothing
behind in the store."""

from __future__ import annotations

import json
import os
import re
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.executor_config import ExecutorConfig
from finetune.curriculum import generate_curriculum
from finetune.episode_jobs import suite_job
from finetune.eval_config import EvalOptions
from finetune.evaluate import evaluate
from finetune.suite import Suite, load_suite
from trajectories.store import TrajectoryStore

try:
    import ray  # noqa: F401
except ImportError:
    if os.environ.get("APPRENTICE_REQUIRE_DOCKER") == "1":  # CI installs the ray extra
        raise
    pytest.skip("Ray is not installed: pip install 'apprentice[ray]'", allow_module_level=True)
pytestmark = pytest.mark.usefixtures("docker_ready")

TASK_TITLE = b"ray::run_remote_episode"
"""The process title Ray gives a worker while it runs an episode."""
VOLATILE = {"timestamp", "latency_s", "duration_s", "session_id", "repo", "branch",
            "api_base", "id", "tool_call_id", "started_at", "ended_at", "verified_at", "commit"}
"""Differ between any two runs: ids, times, temporary paths, ports, commit hashes (dated)."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head on 127.0.0.1 that runs nothing (0 CPUs) and two nodes of 1 CPU: its address."""
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as patch:  # every address loopback, here and in the nodes
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        local = Cluster(initialize_head=True, connect=False, head_node_args={
            "num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False})
        try:
            for _ in range(2):
                local.add_node(num_cpus=1, node_ip_address="127.0.0.1")
            yield local.address
        finally:
            local.shutdown()


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Suite:
    return load_suite(generate_curriculum(tmp_path_factory.mktemp("suite"), train=0, test=3,
                                          seed=11))


def normalised(path: Path) -> list[dict[str, Any]]:
    """A trajectory's events without what differs between any two runs (ids, times,
    temporary paths, the oracle server's port)."""
    events = [json.loads(line) for line in path.read_text().splitlines()]
    session = events[0]["session_id"]

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: "*" if k in VOLATILE else clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str):
            value = value.replace(session, "SESSION")
            value = re.sub(r"/tmp/(apprentice-ray-\w+/tmp/)?apprentice-episode-\w+", "TMP",
                           value)
            return re.sub(r"\b\d+\.\d+s\b", "Ns", value)
        return value

    return [clean(e) for e in events]


def evaluation(suite: Suite, out: Path, executor: ExecutorConfig) -> Any:
    return evaluate(suite, EvalOptions(model="oracle", workers=2, output_dir=out,
                                       executor=executor))


def test_ray_gives_the_rewards_and_trajectories_of_the_local_executor(
        cluster: str, suite: Suite, tmp_path: Path) -> None:
    local = evaluation(suite, tmp_path / "local", ExecutorConfig())
    remote = evaluation(suite, tmp_path / "ray", ExecutorConfig(kind="ray", ray_address=cluster))
    assert [(e.instance_id, e.reward, e.exit_status, e.steps) for e in remote.episodes] == \
        [(e.instance_id, e.reward, e.exit_status, e.steps) for e in local.episodes]
    assert remote.summary["pass@1"] == local.summary["pass@1"] == 1.0
    store = TrajectoryStore()
    for here, there in zip(local.episodes, remote.episodes, strict=True):
        path = Path(there.trajectory_path or "")
        assert path.is_relative_to(tmp_path / "ray" / there.instance_id)
        assert normalised(path) == normalised(Path(here.trajectory_path or ""))
        assert path.with_suffix(".patch").read_text() == \
            Path(here.trajectory_path or "").with_suffix(".patch").read_text()
        row = store.get(path.stem)  # indexed by the driver, at the driver's path
        assert row is not None and row["path"] == str(path.resolve()) and row["reward"] == 1
    assert not list((tmp_path / "ray").rglob("*.partial"))


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])  # the name may hold spaces


def _descends_from_us(pid: int) -> bool:
    """Whether `pid` was started (through the raylets) by this test process: the workers of
    this module's cluster, never those of another Ray job on the machine."""
    ours = os.getpid()
    while pid > 1:
        pid = _parent(pid)
        if pid == ours:
            return True
    return False


def _running_episode_workers() -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(TASK_TITLE) \
                        and _descends_from_us(int(entry.name)):
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def _scratch_of(pid: int) -> list[Path]:
    """The task folders (`agent.ray_scratch`) process `pid` made."""
    from agent.ray_scratch import PREFIX, owner_pid

    return [p for p in Path(tempfile.gettempdir()).glob(f"{PREFIX}*") if owner_pid(p) == pid]


def _kill_next_worker(spared: set[int], timeout_s: float = 300.0) -> int:
    """SIGKILL the first worker (of this module's cluster) seen running an episode that is
    not in `spared`, once it has made its task folder; its pid. The wait is as long as the
    episode's own (a retry's fresh worker can take minutes to start on a loaded 2-core
    machine)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in _running_episode_workers() - spared:
            if _scratch_of(pid):
                os.kill(pid, signal.SIGKILL)
                return pid
        time.sleep(0.02)
    raise AssertionError(f"no worker ran an episode within {timeout_s:.0f} s")


def _submit(suite: Suite, out: Path, cluster: str) -> tuple[Any, Any]:
    from agent.ray_executor import RayExecutor

    task = suite.tasks[0]
    executor = RayExecutor(ExecutorConfig(kind="ray", ray_address=cluster, max_retries=1))
    options = EvalOptions(model="oracle")
    return executor, executor.submit(suite_job(suite, task, options.episode, out, oracle=True,
                                               portable=True))


def test_an_episode_whose_worker_is_killed_runs_again(cluster: str, suite: Suite,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "episode"
    executor, running = _submit(suite, out, cluster)
    with executor:
        killed = _kill_next_worker(set())
        left = _scratch_of(killed)
        result = running.future.result(timeout=300)
        ran_on = executor.last_node[str(out)]
    assert result.reward == 1 and result.exit_status == "finished"
    assert left and not any(p.exists() for p in left)  # swept by the rerun (one machine)
    assert not ran_on.endswith(f":{killed}")
    assert sorted(p.name for p in out.iterdir()) == [f"{result.session_id}.jsonl",
                                                      f"{result.session_id}.patch"]
    assert Path(result.trajectory_path) == out / f"{result.session_id}.jsonl"
    assert [row["id"] for row in TrajectoryStore().list()] == [result.session_id]


def test_an_episode_whose_worker_dies_on_every_try_is_lost_and_leaves_nothing(
        cluster: str, suite: Suite, tmp_path: Path) -> None:
    from agent.ray_executor import EpisodeLost

    out = tmp_path / "episode"
    executor, running = _submit(suite, out, cluster)
    with executor:
        first = _kill_next_worker(set())
        second = _kill_next_worker({first})
        left = _scratch_of(second)
        with pytest.raises(EpisodeLost, match="died on every try"):
            running.future.result(timeout=300)
    assert not out.exists()
    assert left and set(map(str, left)) <= set(executor.swept)  # by the driver, at the end
    assert not _scratch_of(first) and not _scratch_of(second)
    assert TrajectoryStore().list() == []


def test_solve_samples_on_ray_lands_every_attempt_and_selects_as_local_does(
        cluster: str, example: tuple[Path, Path]) -> None:
    """`agent solve --samples 3 --executor ray`: the attempts run on the nodes (the repository
    as a bundle of its base commit), the selector here; the candidates' signals, rewards and
    the selected patch are those of the local executor, and every trajectory is landed,
    indexed and linked to the group."""
    from agent.ray_executor import RayExecutor
    from agent.samples import SamplesConfig, SamplesResult, run_samples
    from agent.scripted_model import ScriptedConversationsServer
    from agent.tasks import Task
    from tests.test_samples import BREAKS_MULTIPLY, EMPTY, RIGHT, by_patch, config
    from trajectories.events import Selection, parse_event
    from trajectories.reader import read_trajectory

    repo, issue = example
    task = Task.from_issue_file(issue, repo)

    def group(executor: Any = None) -> SamplesResult:
        with ScriptedConversationsServer([RIGHT, EMPTY, BREAKS_MULTIPLY]) as server:
            return run_samples(task, config(server), SamplesConfig(samples=3, workers=2),
                               executor=executor)

    local = group()
    with RayExecutor(ExecutorConfig(kind="ray", ray_address=cluster)) as executor:
        remote = group(executor)
        nodes = set(executor.last_node.values())
    assert len(nodes) >= 1 and all(not n.endswith(f":{os.getpid()}") for n in nodes)
    here, there = by_patch(local), by_patch(remote)
    assert set(there) == set(here) == {"right", "empty", "breaks"}
    for key in here:
        assert there[key]["signals"] == here[key]["signals"]
        assert (there[key]["reward"], there[key]["lost"]) == (here[key]["reward"],
                                                              here[key]["lost"])
        assert there[key]["patch"] == here[key]["patch"]
    assert remote.selected and local.selected
    assert there["right"]["attempt"] == remote.selection.selected
    assert here["right"]["attempt"] == local.selection.selected
    store = TrajectoryStore()
    headers = []
    for row in remote.candidates():
        path = Path(row["trajectory_path"])
        assert path.is_file() and not path.is_relative_to("/tmp/apprentice-ray-")
        indexed = store.get(path.stem)
        assert indexed is not None and indexed["path"] == str(path.resolve())
        headers.append(read_trajectory(path).header)
    assert {h.group["id"] for h in headers if h} == {remote.group_id}
    assert sorted(h.group["attempt"] for h in headers if h) == [0, 1, 2]
    event = parse_event(remote.selection_path.read_text().splitlines()[0])
    assert isinstance(event, Selection) and event.selected == remote.selection.selected
    assert sorted(c["session_id"] for c in event.candidates) == \
        sorted(h.session_id for h in headers if h)


def test_grpo_rollouts_of_a_served_policy_run_on_ray(cluster: str, model_ready: Path,
                                                     tmp_path: Path) -> None:
    """A GRPO rollout episode on a node, the policy served as vLLM would (a server here, on
    127.0.0.1, which the nodes of this machine reach): the sample the driver builds from the
    landed trajectory carries the server's token ids and logprobs exactly."""
    from transformers import AutoTokenizer

    from tests.test_served_rollout import assert_trains_on_the_served_tokens, run_served_episode

    suite = load_suite(generate_curriculum(tmp_path / "suite", train=1, test=0, seed=7))
    tokenizer = AutoTokenizer.from_pretrained(model_ready)
    task = suite.split("train")[0]
    out, server = run_served_episode(suite, task, tmp_path / "rollouts", tokenizer,
                                     ExecutorConfig(kind="ray", ray_address=cluster))
    assert_trains_on_the_served_tokens(out, server, task, tokenizer)
    trajectory = next((tmp_path / "rollouts").rglob("*.jsonl"))
    assert TrajectoryStore().get(trajectory.stem) is not None  # landed and indexed here
    from trajectories.reader import read_trajectory

    header = read_trajectory(trajectory).header
    assert header is not None and "/apprentice-ray-" in header.repo  # cloned on a node


def test_synthesis_validates_on_ray_as_it_does_locally(cluster: str, tmp_path: Path) -> None:
    """`agent finetune synthesize --executor ray`: the baseline and the batches of candidates
    run in the cluster's worker processes, from the repository's bundle, and keep the tasks
    (and reject the candidates) the local executor does."""
    from finetune.synthesis import SynthesisOptions, synthesize
    from tests.test_synthesis import _calc

    repo = _calc(tmp_path)
    runs = {}
    for kind in ("local", "ray"):
        report = synthesize(SynthesisOptions(
            repos=[repo], out=tmp_path / kind, kinds=["swap_operator", "change_constant"],
            timeout=6, workers=2, split="train", batch=2,
            executor=ExecutorConfig(kind=kind, ray_address=cluster if kind == "ray" else None)),
            log=lambda _: None)
        tasks = load_suite(tmp_path / kind).tasks
        runs[kind] = (report["repos"][0], {t.instance_id: (t.FAIL_TO_PASS, t.PASS_TO_PASS,
                                                           t.patch) for t in tasks})
    (local, local_tasks), (remote, remote_tasks) = runs["local"], runs["ray"]
    assert remote["executor"] == "ray" and local["executor"] == "local"
    assert local["remote_processes"] == 0  # this process's threads
    assert remote["remote_processes"] >= 1  # Ray's workers, not this process
    assert remote["counts"] == local["counts"] and remote["counts"]["kept"] >= 1
    assert remote_tasks == local_tasks
    assert not list((tmp_path / "ray").rglob("*.worker*"))
