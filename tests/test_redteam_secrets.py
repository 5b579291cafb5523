"""Red team, issue 12: secrets that reached trajectories, exports and `agent solve`'s output;
`agent solve` options that were accepted or failed late; and what a killed run left behind
(episodes `running` forever, verify containers and folders that prune did not find)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.scripted_model import ScriptedModelServer, tool_call
from tests.test_solve import run_cli
from tools.process_owner import ProcessOwner
from trajectories.reader import read_trajectory
from trajectories.redact import MARKER, Redactor
from trajectories.store import TrajectoryStore

# --- what counts as a secret, and what does not ---------------------------------------------

SECRETS = {  # text -> the secret part that must go
    "https://apprentice:pw-Sup3rSecret-99@llm.example.com/v1": "pw-Sup3rSecret-99",
    "https://llm.example.com/v1?api_key=qs-secret-123456": "qs-secret-123456",
    "https://llm.example.com/v1?alt=json&key=qs-secret-654321": "qs-secret-654321",
    "ANTHROPIC_KEY sk-ant-api03-" + "A1b2" * 10: "A1b2" * 10,
    "key: sk-proj-" + "Zz9_" * 10: "Zz9_" * 10,
    "github_pat_11ABCDEFG0" + "x7" * 20: "x7" * 20,
    "remote glpat-" + "Yq3" * 7: "Yq3" * 7,
    "maps AIza" + "Sy" * 17 + "Q": "Sy" * 17 + "Q",
    "stripe sk_live_" + "4eC3" * 6: "4eC3" * 6,
    "stripe rk_live_" + "5fD4" * 6: "5fD4" * 6,
    "//registry.npmjs.org/:_authToken=npm_" + "n0" * 18: "n0" * 18,
    "password = pypi-AgEIcHlwaS5vcmc" + "p1" * 25: "p1" * 25,
    "cookie eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9P":
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9P",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nQyNTUxOQAAACBk\n"
    "-----END OPENSSH PRIVATE KEY-----": "b3BlbnNzaC1rZXktdjEAAAAA",
    "Authorization: Bearer abcDEF123456.xyz-789": "abcDEF123456.xyz-789",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY":
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "API_TOKEN=abc123xyz789secret": "abc123xyz789secret",
    "  password: hunter2hunter2": "hunter2hunter2",
    '{"secret": "s3cr3t-value-x9"}': "s3cr3t-value-x9",
    "export GITHUB_TOKEN=tok_987654321abc": "tok_987654321abc",
    "the db password is P@ssw0rd-123456.": "P@ssw0rd-123456",
    "connect with password=Pa55-word-42": "Pa55-word-42",
    "SECRET_KEY=changemeplease": "changemeplease",
    "x-api-key: 0123abcd4567efgh": "0123abcd4567efgh",
}
ORDINARY = [
    "token = tokens[0]",
    "def get_key(self):",
    "password_field = forms.CharField()",
    "token = self.tokenizer",
    "api_key: Optional[str] = None",
    "api_key = os.environ['OPENAI_API_KEY']",
    "auth_token = get_auth_token(request)",
    "secret_key: SecretStr",
    "max_tokens: 1024",
    "token_count = 123456789",
    "keyboard=us-international",
    "sorted(items, key=lambda item: item[1])",
    "primary_key=True",
    "PASS_TO_PASS: tests/test_ops.py::test_add",
    "PWD=/home/user/project",
    "GOOGLE_APPLICATION_CREDENTIALS=/home/me/creds.json",
    "the token is expiring",
    "Basic authentication is disabled",
    "https://api.example.com/v1/models?page=2",
]


@pytest.mark.parametrize("text", list(SECRETS))
def test_credential_shapes_and_secret_values_are_redacted(text: str) -> None:
    redact = Redactor(environ={})
    secret = SECRETS[text]
    for form in (text, json.dumps({"output": f"before\n{text}\nafter"}),
                 json.dumps(json.dumps({"output": text}))):
        redacted = redact(form)
        assert secret not in redacted and MARKER in redacted, form
        if form is not text:
            json.loads(redacted)  # JSON stays JSON


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_code_is_left_alone(text: str) -> None:
    redact = Redactor(environ={})
    assert redact(text) == text
    line = json.dumps({"output": text})
    assert redact(line) == line


def test_keys_stay_visible_and_json_values_are_redacted() -> None:
    redact = Redactor(environ={})
    assert redact("API_TOKEN=abc123xyz789secret") == f"API_TOKEN={MARKER}"
    assert redact('"secret": "s3cr3t-value-x9"') == f'"secret": "{MARKER}"'
    assert redact.data({"api_key": "plain-0123456789", "messages": [
        {"content": "password: hunter2hunter2", "n": 3}]}) == {
        "api_key": MARKER, "messages": [{"content": f"password: {MARKER}", "n": 3}]}


# --- secrets through `agent solve`, the trajectory, the index and the exports ------------------

REPO_FILES = {
    ".env": "API_TOKEN=abc123xyz789secret\nDEBUG=1\n",
    "config.yml": "database:\n  user: app\n  password: hunter2hunter2\n",
    "settings.json": '{"name": "calc", "secret": "s3cr3t-value-x9"}\n',
    "deploy.sh": "export GITHUB_TOKEN=tok_987654321abc\n",
    "deploy_key.pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAsecretbody\n"
                      "-----END RSA PRIVATE KEY-----\n",
    "calculator/forms.py": "token = tokens[0]\npassword_field = forms.CharField()\n\n\n"
                           "def get_key(self):\n    return self.key\n",
}
URL_PASSWORD = "pw-Sup3rSecret-99"
ISSUE_SECRETS = ("P@ssw0rd-123456", "Adm1n-pass-777")
LEAKS = ("abc123xyz789secret", "hunter2hunter2", "s3cr3t-value-x9", "tok_987654321abc",
         "MIIEpAIBAAKCAQEAsecretbody", URL_PASSWORD, *ISSUE_SECRETS)


def commit_files(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (repo / name).write_text(text)
    subprocess.run(["git", "-C", str(repo), "add", "-f", *files], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qm", "config"], check=True)


def assert_no_leak(where: str, text: str) -> None:
    for secret in LEAKS:
        assert secret not in text, f"{secret!r} leaked into {where}"


@pytest.mark.usefixtures("docker_ready")
def test_secrets_never_leave_solve_the_trajectory_the_index_or_the_exports(
        example, scripted: ScriptedModelServer, apprentice_home: Path, tmp_path: Path) -> None:
    repo, issue = example
    commit_files(repo, REPO_FILES)
    issue.write_text(issue.read_text() + f"\nThe db password is {ISSUE_SECRETS[0]}. In CI we "
                     f"log in with password={ISSUE_SECRETS[1]}\n")
    script = [
        {"tool_calls": [tool_call("bash", {"command": "cat .env config.yml deploy.sh"})]},
        {"tool_calls": [tool_call("view", {"path": ".env"})]},
        {"tool_calls": [tool_call("view", {"path": "settings.json"})]},
        {"tool_calls": [tool_call("bash", {"command": "cat deploy_key.pem"})]},
        {"tool_calls": [tool_call("view", {"path": "calculator/forms.py"})]},
        {"tool_calls": [tool_call("create", {"path": "notes.txt", "file_text":
                                             "API_TOKEN=abc123xyz789secret\n"})]},
        {"tool_calls": [tool_call("finish", {"summary": "the password is hunter2hunter2"})]},
    ]
    api_base = scripted.url.replace("http://", f"http://apprentice:{URL_PASSWORD}@")
    solve = ["solve", str(issue), "--repo", str(repo), "--model", "openai/scripted",
             "--api-base", api_base, "--max-steps", "10"]
    scripted.script = list(script)
    proc = run_cli(*solve)  # text: the patch and summary on stdout, progress on stderr
    assert proc.returncode == 0, proc.stderr
    assert_no_leak("solve's output", proc.stdout)
    assert_no_leak("solve's progress lines", proc.stderr)
    assert f"API_TOKEN={MARKER}" in proc.stderr  # the key stays visible
    scripted.script = list(script)
    proc = run_cli(*solve, "--output-format", "stream-json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    streamed = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines)
    assert_no_leak("solve --output-format stream-json", proc.stdout)
    assert_no_leak("solve's stream-json lines, decoded", streamed)
    assert_no_leak("solve's stderr", proc.stderr)
    result = lines[-1]
    assert result["type"] == "result"
    assert_no_leak("solve --json", json.dumps(result, indent=2))
    assert f"+API_TOKEN={MARKER}" in result["patch"] and MARKER in result["summary"]
    assert f"API_TOKEN={MARKER}" in streamed  # the key stays visible

    events = read_trajectory(Path(result["trajectory_path"])).events
    outputs = "\n".join(e.output for e in events if e.type == "tool_result")
    assert f"API_TOKEN={MARKER}" in outputs and f"password: {MARKER}" in outputs
    assert "token = tokens[0]" in outputs and "password_field = forms.CharField()" in outputs
    assert "def get_key(self):" in outputs
    assert f"apprentice:{URL_PASSWORD}" not in json.dumps(events[0].model_params)

    show_calls = run_cli("trajectories", "show", result["session_id"], "--calls", "--json")
    show_text = run_cli("trajectories", "show", result["session_id"])
    assert show_calls.returncode == 0 and show_text.returncode == 0
    assert_no_leak("show --calls --json", show_calls.stdout)
    assert_no_leak("show", show_text.stdout)
    for fmt in ("sft", "swebench"):
        out = tmp_path / f"{fmt}.jsonl"
        exported = run_cli("trajectories", "export", "--format", fmt, "--out", str(out),
                           "--include-failures")
        assert exported.returncode == 0, exported.stderr
        assert out.stat().st_size > 0
        assert_no_leak(f"export {fmt}", out.read_text())
    for path in apprentice_home.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            assert_no_leak(str(path), path.read_bytes().decode(errors="replace"))


# --- `agent solve` options are checked before anything starts -------------------------------


@pytest.mark.parametrize("flags", [["--max-steps", "0"], ["--max-steps", "-1"],
                                   ["--timeout", "-1"], ["--context-window", "-5"],
                                   ["--max-tokens", "0"], ["--temperature", "-0.5"]])
def test_bad_numbers_fail_at_once_with_one_line(example, apprentice_home: Path,
                                                flags: list[str]) -> None:
    repo, issue = example
    proc = run_cli("solve", str(issue), "--repo", str(repo), "--model", "openai/scripted",
                   "--api-base", "http://127.0.0.1:9/v1", *flags)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"agent: error: {flags[0]} must be"), lines[0]
    assert not (apprentice_home / "runs").exists()  # nothing started: no run, no sandbox


def test_a_binary_issue_file_is_a_clear_error(example, tmp_path: Path) -> None:
    repo, _ = example
    binary = tmp_path / "issue.md"
    binary.write_bytes(b"Fix add\n\x80\x81\xfe\xff" + os.urandom(64))
    proc = run_cli("solve", str(binary), "--repo", str(repo))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "UnicodeDecodeError" not in proc.stderr
    assert f"issue file {binary} is not UTF-8 text" in proc.stderr
    with_nul = tmp_path / "nul.md"
    with_nul.write_bytes(b"Fix add\x00\x00")
    proc = run_cli("solve", str(with_nul), "--repo", str(repo))
    assert proc.returncode == 2 and "looks binary" in proc.stderr


# --- what a killed run leaves behind -----------------------------------------------------------


def dead_owner() -> ProcessOwner:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = ProcessOwner.current()
    child.wait(timeout=30)
    return ProcessOwner(child.pid, owner.started, owner.boot, owner.host)


def test_an_owner_is_gone_only_when_that_is_certain() -> None:
    me = ProcessOwner.current()
    assert not me.gone()
    assert ProcessOwner(me.pid, "1", me.boot, me.host).gone()  # the pid was reused
    assert ProcessOwner(me.pid, me.started, "another-boot", me.host).gone()  # rebooted
    assert not ProcessOwner(me.pid, "1", me.boot, "another-host").gone()  # cannot tell
    assert dead_owner().gone()
    assert ProcessOwner.from_labels(me.labels()) == me


def test_the_index_marks_episodes_of_dead_processes_killed(apprentice_home: Path) -> None:
    store = TrajectoryStore()
    base = {"task": "t", "repo": "r", "model": "m", "started_at": 1.0, "ended_at": None,
            "steps": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0,
            "exit_status": "running", "reward": None, "verified_at": None, "path": "p"}
    for episode_id, owner in (("dead", dead_owner()), ("alive", ProcessOwner.current())):
        store.upsert({**base, "id": episode_id})
        store.set_owner(episode_id, owner)
    store.upsert({**base, "id": "unknown"})  # no owner recorded: cannot be judged
    statuses = {r["id"]: r["exit_status"] for r in store.list()}
    assert statuses == {"dead": "killed", "alive": "running", "unknown": "running"}
    store.close()


def wait_for(condition: Callable[[], object], what: str, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def start_solve(example, scripted: ScriptedModelServer, *extra: str,
                env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    repo, issue = example
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "solve", str(issue), "--repo", str(repo),
         "--model", "openai/scripted", "--api-base", scripted.url, *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.usefixtures("docker_ready")
def test_a_killed_episode_is_listed_killed_not_running(example, scripted, apprentice_home: Path
                                                       ) -> None:
    scripted.script = [{"tool_calls": [tool_call("bash", {"command": "echo hi"})]},
                       {"hang": 120}]
    proc = start_solve(example, scripted)
    try:
        wait_for(lambda: len(scripted.requests) >= 2, "the second model call")
    finally:
        kill(proc)
    row = TrajectoryStore().list()[0]
    assert row["exit_status"] == "killed" and row["owner_pid"] == proc.pid
    listed = json.loads(run_cli("trajectories", "list", "--json").stdout)
    assert listed[0]["exit_status"] == "killed"
    sessions = json.loads(run_cli("sessions", "list", "--json").stdout)
    assert [s["episode"] for s in sessions if s["session_id"] == row["id"]] == ["killed"]
    assert run_cli("trajectories", "reindex").returncode == 0
    assert TrajectoryStore().get(row["id"])["exit_status"] == "killed"  # the owner is kept


@pytest.mark.usefixtures("docker_ready")
def test_prune_marks_and_removes_what_a_kill_during_verify_left(
        example, scripted, tmp_path: Path) -> None:
    from tools.sandbox import connect_docker

    temp = tmp_path / "tmp"
    temp.mkdir()
    scripted.script = [{"tool_calls": [tool_call("finish", {"summary": "done"})]}]
    proc = start_solve(example, scripted, "--test-cmd", "sleep 300", env={"TMPDIR": str(temp)})
    client = connect_docker()
    label = f"apprentice.owner.pid={proc.pid}"

    def verify_containers() -> list:
        return [c for c in client.containers.list(all=True, filters={"label": label})
                if any("apprentice-verify-" in (m.get("Source") or "")
                       for m in c.attrs.get("Mounts", []))]

    try:
        wait_for(verify_containers, "the verify container")
        container = verify_containers()[0]
        assert container.labels["apprentice.owner.host"] == socket.gethostname()
    finally:
        kill(proc)
    try:
        folders = list(temp.glob(f"apprentice-verify-{proc.pid}-*"))
        assert len(folders) == 1 and (folders[0] / "workspace").is_dir()
        marker = folders[0] / "workspace" / "MARKER"
        marker.write_text("left by a killed verify\n")
        dry = run_cli("sessions", "prune", "--dry-run", env={"TMPDIR": str(temp)})
        assert f"would remove container {container.short_id} of process {proc.pid}" in dry.stdout
        assert f"would remove verify folder {folders[0]}" in dry.stdout
        assert marker.exists()
        pruned = run_cli("sessions", "prune", env={"TMPDIR": str(temp)})
        assert pruned.returncode == 0, pruned.stderr
        assert f"remove container {container.short_id} of process {proc.pid}" in pruned.stdout
        assert f"remove verify folder {folders[0]}" in pruned.stdout
        assert not verify_containers() and not folders[0].exists()
    finally:
        for leftover in client.containers.list(all=True, filters={"label": label}):
            leftover.remove(force=True)
        client.close()
