"""The sentinel protocol that turns one long-lived bash process into a command runner.

Both sandboxes talk to bash over a byte pipe (a Docker exec attach socket, or the pipes of a
local subprocess). A command is sent as one line: the command, single-quoted and `eval`-ed in a
function with stdin from /dev/null, then a `printf` of a marker unique to that command carrying
its exit status. Output is read until that marker, so the stream never gets out of step.

The work shell runs with job control (`set -m`): every pipeline it starts gets a process group of
its own. A second, *control* shell runs only bash builtins (so it works even when the process
limit is reached) and, on a time-out, kills every process group in the work shell's session and
signals the work shell, whose trap abandons the command.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Literal, Protocol, Self

from tools.sandbox.base import CommandResult, SandboxError, cut_marker, truncate_middle

BASH_ARGV = ["bash", "--noprofile", "--norc"]
"""How both sandboxes start a shell: no profile or rc file may change the protocol."""

_RUN_FUNCTION = r"""__apprentice_run() { eval "$1" </dev/null; }
exec 2>&1
"""
"""Every shell's set-up: how commands run; stderr joins stdout."""

_WORK_PREAMBLE = r"""set -m
trap 'return 130 2>/dev/null' USR1
"""

# `__apprentice_reap SID MODE` kills what runs in session SID (the work shell's pid), reading
# /proc with builtins only. MODE: `children` spares the shell, `abort` also sends it SIGUSR1
# (its trap returns from the command), `all` kills the shell too. Prints how many it signalled.
_CONTROL_PREAMBLE = r"""__apprentice_reap() {
  local sid=$1 mode=$2 n=0 d pid line g
  local -a f
  local -A groups=()
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    { read -r line <"$d/stat"; } 2>/dev/null || continue
    line=${line##*) }
    f=($line)
    [[ ${f[3]} == "$sid" ]] || continue
    if [[ $pid == "$sid" ]]; then
      continue
    elif [[ ${f[2]} == "$sid" ]]; then
      kill -KILL "$pid" 2>/dev/null && n=$((n + 1))
    else
      groups[${f[2]}]=1
    fi
  done
  if [[ $mode == abort ]]; then kill -USR1 "$sid" 2>/dev/null; fi  # pending before jobs die
  for g in "${!groups[@]}"; do kill -KILL -- "-$g" 2>/dev/null && n=$((n + 1)); done
  if [[ $mode == all ]]; then kill -KILL "$sid" 2>/dev/null && n=$((n + 1)); fi
  echo "$n"
}
"""

HANDSHAKE_TIMEOUT = 15.0
"""Seconds a freshly started shell has to answer its first sentinel."""
KILL_GRACE = 5.0
"""Seconds after a time-out during which the runner keeps killing, before it kills the shell."""
CONTROL_TIMEOUT = 5.0
"""Seconds one control-shell command (builtins only) may take."""


class ShellTransport(Protocol):
    """A byte pipe to one running bash process: its stdin, and its stdout with stderr."""

    def send(self, data: bytes) -> None:
        """Write to bash's stdin; raise OSError if the process is gone."""
        ...

    def receive(self, timeout: float) -> bytes | None:
        """Output arriving within `timeout` seconds (b"" if none); None once bash has exited."""
        ...

    def exit_code(self) -> int | None:
        """Bash's exit status after it exited (128+N when killed by signal N)."""
        ...

    def close(self) -> None:
        """Release the pipe (and stop bash where the transport can); safe to call twice."""
        ...


def shell_quote(text: str) -> str:
    """`text` as one single-quoted bash word (NUL bytes, which bash cannot carry, dropped)."""
    return "'" + text.replace("\0", "").replace("'", "'\\''") + "'"


class OutputCollector:
    """One command's output up to its sentinel, held as a bounded head and a rolling tail.

    Endless output (`yes`) costs at most `head_bytes + 2 * tail_bytes` of memory.
    """

    def __init__(self, marker: bytes, head_bytes: int, tail_bytes: int) -> None:
        self._pattern = re.compile(re.escape(marker) + rb"(-?\d+)\n")
        self._carry_size = len(marker) + 24
        self._carry = b""
        self._head = bytearray()
        self._tail = bytearray()
        self._head_bytes = head_bytes
        self._tail_bytes = tail_bytes
        self.dropped = 0
        self.status: int | None = None
        self.leftover = b""

    def feed(self, chunk: bytes) -> bool:
        """Take a chunk of the stream; True once the sentinel (and so the status) was seen."""
        data = self._carry + chunk
        match = self._pattern.search(data)
        if match:
            self._keep(data[: match.start()])
            self._carry = b""
            self.status = int(match.group(1))
            self.leftover = data[match.end() :]
            return True
        split = max(0, len(data) - self._carry_size)
        self._keep(data[:split])
        self._carry = data[split:]
        return False

    def flush(self) -> None:
        """Keep whatever is held back for sentinel matching (the stream ended without one)."""
        self._keep(self._carry)
        self._carry = b""

    def absorb(self, other: OutputCollector) -> None:
        """Append what `other` collected (bounded as usual)."""
        other.flush()
        self._keep(bytes(other._head) + bytes(other._tail))
        self.dropped += other.dropped

    def _keep(self, data: bytes) -> None:
        room = self._head_bytes - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        self._tail += data
        excess = len(self._tail) - self._tail_bytes
        if excess > self._tail_bytes:  # trim in batches: amortised O(1) per byte
            del self._tail[:excess]
            self.dropped += excess

    def render(self, limit: int) -> tuple[str, int]:
        """The output as text within `limit` characters (head + tail), and how much was cut."""
        excess = len(self._tail) - self._tail_bytes
        if excess > 0:
            del self._tail[:excess]
            self.dropped += excess
        head = self._head.decode("utf-8", errors="replace")
        tail = self._tail.decode("utf-8", errors="replace")
        if not self.dropped:
            return truncate_middle(head + tail, limit)
        half = limit // 2
        kept_head, kept_tail = head[:half], (tail[-half:] if half else "")
        cut = self.dropped + len(head) - len(kept_head) + len(tail) - len(kept_tail)
        return kept_head + cut_marker(cut) + kept_tail, cut


Outcome = Literal["done", "timeout", "exited"]


class PersistentShell:
    """One long-lived bash process spoken to through the sentinel protocol."""

    def __init__(
        self, spawn: Callable[[], ShellTransport], preamble: str, output_limit: int
    ) -> None:
        self._spawn = spawn
        self._preamble = preamble
        self._output_limit = output_limit
        self._token = secrets.token_hex(8)
        self._count = 0
        self._transport: ShellTransport | None = None
        self._pending = b""
        self.pid = 0

    def start(self) -> None:
        """Start bash, set it up, and learn its pid (which is also its session id)."""
        self.close()
        try:
            self._transport = self._spawn()
        except Exception as exc:  # the engine or OS refused: say so, whatever the library
            raise SandboxError(f"The sandbox shell could not be started: {exc}") from exc
        try:
            collector = self._send(_RUN_FUNCTION + self._preamble, "$$")
            outcome = self.collect(collector, time.monotonic() + HANDSHAKE_TIMEOUT)
        except OSError as exc:
            self.close()
            raise SandboxError(f"The sandbox shell could not be started: {exc}") from exc
        if outcome != "done" or collector.status is None:
            text, _ = collector.render(2000)
            self.close()
            raise SandboxError(f"The sandbox shell did not start ({outcome}): {text.strip()}")
        self.pid = collector.status

    def alive(self) -> bool:
        """Whether bash is still running (output it printed meanwhile is kept for later)."""
        if self._transport is None:
            return False
        chunk = self._transport.receive(0)
        if chunk is None:
            return False
        self._pending += chunk
        return True

    def send_command(self, command: str) -> OutputCollector:
        """Send one command; its output is then read with `collect`."""
        return self._send(f"__apprentice_run {shell_quote(command)}", '"$?"')

    def _send(self, line: str, status: str) -> OutputCollector:
        if self._transport is None:
            raise OSError("the shell is not running")
        self._count += 1
        tag = f"{self._token}:{self._count}"
        marker = f"\x1e{tag}\x1f".encode()
        size = max(self._output_limit, 1024) * 2
        collector = OutputCollector(marker, head_bytes=size, tail_bytes=size)
        if self._pending:
            collector.feed(self._pending)
            self._pending = b""
        self._transport.send(f"{line}\nprintf '\\036%s\\037%d\\n' '{tag}' {status}\n".encode())
        return collector

    def collect(self, collector: OutputCollector, deadline: float) -> Outcome:
        """Read into `collector` until its sentinel, the deadline, or the end of the shell."""
        if collector.status is not None:
            return "done"
        if self._transport is None:
            collector.flush()
            return "exited"
        while True:
            chunk = self._transport.receive(max(0.0, deadline - time.monotonic()))
            if chunk is None:
                collector.flush()
                return "exited"
            if chunk and collector.feed(chunk):
                self._pending = collector.leftover
                return "done"
            if time.monotonic() >= deadline:
                return "timeout"

    def settle(self, collector: OutputCollector, timeout: float = 2.0) -> None:
        """Run a no-op so bash reports killed jobs now, into `collector` (not the next command)."""
        try:
            probe = self.send_command(":")
        except OSError:
            return
        if self.collect(probe, time.monotonic() + timeout) == "done":
            collector.absorb(probe)

    def exit_code(self) -> int | None:
        """The exit status of a shell that has exited."""
        return self._transport.exit_code() if self._transport else None

    def close(self) -> None:
        """Drop the pipe to bash (its last pid stays known); safe to call twice."""
        if self._transport is not None:
            transport, self._transport = self._transport, None
            transport.close()
        self._pending = b""


class CommandRunner:
    """Runs commands in a persistent work shell; enforces time-outs through a control shell.

    `recover` is called when even the control shell cannot be used (e.g. the process limit is
    exhausted and no shell can be started); it must leave no process of the old shells behind
    (the Docker sandbox restarts its container). Without it the runner closes the work shell.
    """

    def __init__(
        self,
        spawn: Callable[[], ShellTransport],
        output_limit: int,
        default_timeout: float,
        recover: Callable[[], None] | None = None,
    ) -> None:
        self._work = PersistentShell(spawn, _WORK_PREAMBLE, output_limit)
        self._control = PersistentShell(spawn, _CONTROL_PREAMBLE, 1000)
        self._output_limit = output_limit
        self._default_timeout = default_timeout
        self._recover = recover
        self._control_ready: threading.Thread | None = None
        self._cancel = threading.Event()

    def start(self) -> None:
        """Start the work shell; the control shell starts meanwhile, in the background.

        The runner is usable as soon as the work shell answers; the control shell is only
        needed on a time-out, and is waited for then (or started again if it failed).
        """
        self._control_ready = threading.Thread(
            target=self._start_control, name="sandbox-control-shell", daemon=True
        )
        self._control_ready.start()
        try:
            self._work.start()
        except BaseException:
            self._await_control()
            self._control.close()
            raise

    def _start_control(self) -> None:
        with contextlib.suppress(Exception):  # a failure shows later: `_reap` starts it again
            self._control.start()

    def _await_control(self) -> None:
        """Wait for the background start of the control shell, if one is under way."""
        if self._control_ready is not None:
            self._control_ready.join()
            self._control_ready = None

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run `command` in the work shell. Never raises because the command failed."""
        started = time.monotonic()
        limit = self._default_timeout if timeout is None else timeout
        restarted = False
        self._cancel.clear()
        if not self._work.alive():
            self._restart_work(self._work.pid)
            restarted = True
        try:
            collector = self._work.send_command(command)
        except OSError:
            self._restart_work(self._work.pid)
            restarted = True
            collector = self._work.send_command(command)
        outcome = self._collect_unless_cancelled(collector, started + limit)
        timed_out = outcome == "timeout"
        interrupted = timed_out and self._cancel.is_set()
        if timed_out:
            outcome = self._interrupt(collector)
        exit_code = collector.status
        if outcome == "exited":
            exit_code = self._work.exit_code()
            self._restart_work(self._work.pid)
            restarted = True
        elif timed_out:
            self._sweep(self._work.pid)
            self._work.settle(collector)
        output, cut = collector.render(self._output_limit)
        return CommandResult(
            output=output,
            exit_code=None if timed_out else exit_code,
            timed_out=timed_out and not interrupted,
            interrupted=interrupted,
            truncated_chars=cut,
            shell_restarted=restarted,
            duration_s=time.monotonic() - started,
        )

    def interrupt(self) -> None:
        """Kill the running command now, as its time-out would (thread-safe; idle: no-op)."""
        self._cancel.set()

    def _collect_unless_cancelled(self, collector: OutputCollector, deadline: float) -> Outcome:
        """`collect` in short slices, stopping early ("timeout") once `interrupt` is called."""
        while True:
            outcome = self._work.collect(collector, min(deadline, time.monotonic() + 0.05))
            if outcome != "timeout" or self._cancel.is_set() or time.monotonic() >= deadline:
                return outcome

    def _interrupt(self, collector: OutputCollector) -> Outcome:
        """Kill the timed-out command's processes until the shell answers, else the shell."""
        pid = self._work.pid
        grace_end = time.monotonic() + KILL_GRACE
        usable = True
        while usable and time.monotonic() < grace_end:
            usable = self._reap(pid, "abort") is not None
            outcome = self._work.collect(collector, min(grace_end, time.monotonic() + 0.1))
            if outcome != "timeout":
                return outcome
        if usable:
            self._reap(pid, "all")
        outcome = self._work.collect(collector, time.monotonic() + 2.0)
        if outcome == "timeout":  # the shell could not be killed: abandon it
            collector.flush()
            self._work.close()
            return "exited"
        return outcome

    def _sweep(self, pid: int, passes: int = 50) -> None:
        """Kill what is left in session `pid` (e.g. a fork bomb) until nothing is."""
        for _ in range(passes):
            killed = self._reap(pid, "children")
            if not killed:
                return
            time.sleep(0.02)

    def _restart_work(self, old_pid: int) -> None:
        """Replace a dead work shell, first killing what it left running."""
        self._work.close()
        if old_pid:
            self._sweep(old_pid)
        try:
            self._work.start()
        except SandboxError:
            if self._recover is None:
                raise
            self._recover()  # e.g. no process can be forked in the container any more
            self._control.close()
            self._work.start()

    def _reap(self, sid: int, mode: str) -> int | None:
        """Run the reaper in the control shell; None if no control shell could be used."""
        self._await_control()
        for attempt in range(2):
            try:
                if attempt or not self._control.alive():
                    self._control.start()
                collector = self._control.send_command(f"__apprentice_reap {sid} {mode}")
                deadline = time.monotonic() + CONTROL_TIMEOUT
                if self._control.collect(collector, deadline) == "done":
                    text, _ = collector.render(1000)
                    return int(text.split()[-1]) if text.split() else 0
            except (OSError, SandboxError, ValueError):
                pass
        self._control.close()
        if self._recover is not None:
            self._recover()
        self._work.close()
        self._work.pid = 0  # its processes are gone (or unreachable): nothing left to sweep
        return None

    def close(self, kill_all: bool = False) -> None:
        """Stop both shells (with `kill_all`, also all the work shell started); safe twice."""
        self._await_control()
        if kill_all and self._work.pid and self._control.alive():
            self._sweep(self._work.pid, passes=10)
        self._work.close()
        self._control.close()


class RunnerSandbox:
    """What every persistent-shell sandbox shares: `run` and `interrupt` through its
    `CommandRunner`, and use as a context manager. Subclasses set `_runner` in `start`."""

    _runner: CommandRunner | None = None

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run one command in the persistent shell; failures come back as data."""
        if self._runner is None:
            raise SandboxError("The sandbox is not started: call start() first.")
        return self._runner.run(command, timeout)

    def interrupt(self) -> None:
        """Kill the running command now (thread-safe; a no-op when none runs)."""
        runner = self._runner
        if runner is not None:
            runner.interrupt()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
