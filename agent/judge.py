"""The selector's last tie-breaker: one model call that reads the issue and a few patches and
names the one that resolves it best. It reads only what the agent saw (the issue) and what the
attempts wrote (their patches)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.episode_config import LLMConfig
from agent.llm import LLMClient, ModelError
from trajectories.events import Usage

JUDGE_SYSTEM = (
    "You review candidate patches for a software issue. Each candidate is a unified diff. "
    "Pick the one that resolves the issue correctly with the least risk of breaking anything "
    "else. Answer with the candidate's number only."
)
PATCH_CHARS_MAX = 6000
"""Longest diff shown per candidate; the judge sees the head of a longer one."""
_NUMBER = re.compile(r"\d+")


@dataclass
class Verdict:
    """The judge's pick (an index into the patches it was shown), or None with the reason."""

    choice: int | None
    reply: str
    usage: Usage
    error: str | None = None


def judge_prompt(problem_statement: str, patches: list[str]) -> list[dict[str, str]]:
    """The messages of a judge call."""
    shown = []
    for number, patch in enumerate(patches, start=1):
        body = patch if len(patch) <= PATCH_CHARS_MAX else \
            patch[:PATCH_CHARS_MAX] + "\n... [the rest of this diff is not shown]\n"
        shown.append(f"Candidate {number}:\n```diff\n{body}```")
    user = (f"The issue:\n\n{problem_statement.strip()}\n\n" + "\n\n".join(shown)
            + f"\n\nWhich candidate (1 to {len(patches)}) resolves the issue best? "
            "Reply with its number.")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


class PatchJudge:
    """Asks the model (`llm`, called greedily, without tools) to pick between patches."""

    def __init__(self, llm: LLMConfig):
        self.llm = llm.model_copy(update={"temperature": 0.0, "tool_choice": None,
                                          "stream": False, "max_tokens": 64})

    def __call__(self, problem_statement: str, patches: list[str]) -> Verdict:
        try:
            reply = LLMClient(self.llm).complete(judge_prompt(problem_statement, patches), [])
        except ModelError as exc:
            return Verdict(None, "", Usage(), f"the judge call failed: {exc}")
        text = reply.content or ""
        for found in _NUMBER.findall(text):
            if 1 <= int(found) <= len(patches):
                return Verdict(int(found) - 1, text, reply.usage)
        return Verdict(None, text, reply.usage,
                       f"the judge named no candidate from 1 to {len(patches)}")
