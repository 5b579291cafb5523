"""Check, from inside a started container, that its isolation is really there (fail closed).

The container's settings are asked of the engine, but an engine, a runtime or a daemon option
(userns, a plugin, a default seccomp profile ...) can quietly give something else. One command
in the persistent shell, made of bash builtins only, reports what the processes inside get.
"""

from __future__ import annotations

import re

from tools.sandbox.base import WORKSPACE, SandboxConfig

PROBE = r"""echo "uid=$EUID"
while read -r key value _; do
  case $key in CapEff:|CapPrm:|CapBnd:|CapAmb:|NoNewPrivs:) echo "${key%:}=$value";; esac
done </proc/self/status
links=(/sys/class/net/*); echo "net=${links[*]##*/}"
while read -r _ point kind options _; do
  case $point in
    /) echo "root=$options";;
    /tmp) echo "tmp=$kind";;
    /workspace) echo "workspace=$options";;
  esac
done </proc/mounts
for sock in /var/run/docker.sock /run/docker.sock; do [[ -e $sock ]] && echo "socket=$sock"; done
{ read -r m </sys/fs/cgroup/memory.max || read -r m </sys/fs/cgroup/memory/memory.limit_in_bytes
} 2>/dev/null; echo "memory=$m"
{ read -r p </sys/fs/cgroup/pids.max || read -r p </sys/fs/cgroup/pids/pids.max; } 2>/dev/null
echo "pids=$p"
"""
"""What the processes inside see: user, capabilities, network links, mounts, limits."""

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def memory_bytes(limit: str) -> int:
    """Docker's memory syntax (`512m`, `2g`, `1048576`) in bytes."""
    match = re.fullmatch(r"(\d+)([bkmg]?)", limit.strip().lower())
    if not match:
        raise ValueError(f"memory limit {limit!r} is not like 512m or 2g")
    return int(match.group(1)) * _UNITS[match.group(2)]


def parse_probe(output: str) -> dict[str, str]:
    """The probe's `key=value` lines as a dict (the last value of a repeated key wins)."""
    facts: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            facts[key.strip()] = value.strip()
    return facts


def isolation_problems(facts: dict[str, str], config: SandboxConfig) -> list[str]:
    """What is missing from the isolation `config` asks for, in words; empty if nothing."""
    problems = []
    if facts.get("uid") in (None, "", "0"):
        problems.append(f"commands run as root (uid {facts.get('uid', '?')})")
    for key in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        if facts.get(key, "x").strip("0"):
            problems.append(f"capabilities are not all dropped ({key} {facts.get(key, '?')})")
    if facts.get("NoNewPrivs") != "1":
        problems.append("no-new-privileges is off")
    if not config.network and facts.get("net") != "lo":
        problems.append(f"network interfaces besides loopback: {facts.get('net', '?')}")
    if facts.get("root", "").split(",")[0] != "ro":
        problems.append("the root filesystem is writable")
    if facts.get("tmp") != "tmpfs":
        problems.append("/tmp is not a tmpfs")
    if "workspace" not in facts:
        problems.append(f"{WORKSPACE} is not mounted")
    if "socket" in facts:
        problems.append(f"the Docker socket is inside ({facts['socket']})")
    problems += _limit_problems(facts, config)
    return problems


def _limit_problems(facts: dict[str, str], config: SandboxConfig) -> list[str]:
    problems = []
    memory = facts.get("memory", "")
    if not memory.isdigit() or int(memory) > memory_bytes(config.memory):
        problems.append(f"no memory limit of {config.memory} (the container sees {memory!r})")
    pids = facts.get("pids", "")
    if not pids.isdigit() or int(pids) > config.pids:
        problems.append(f"no limit of {config.pids} processes (the container sees {pids!r})")
    return problems
