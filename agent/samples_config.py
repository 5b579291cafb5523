"""What several attempts at one task are: `SamplesConfig`. Light to import (pydantic only), so
the CLI reads its options' defaults from here; `agent.samples` runs the attempts and
`agent.selection` picks one."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

SAMPLED_TEMPERATURE = 0.7
"""The sampling temperature of several attempts when none is given: greedy attempts at one
task would mostly repeat each other."""
DEFAULT_WORKERS = 4


def samples_problem(samples: int, max_samples: int, stop_when_agree: int | None = None,
                    workers: int | None = None) -> str | None:
    """What is wrong with the attempt options, naming the flag to change, or None."""
    if samples < 1:
        return (f"--samples must be at least 1, not {samples} (1 runs one attempt, N runs N "
                "and picks one)")
    if max_samples < 1:
        return f"--max-samples must be at least 1, not {max_samples}"
    if samples > max_samples:
        return (f"--samples {samples} is more than --max-samples {max_samples}: each attempt "
                "is an episode with its own sandbox; lower --samples or raise --max-samples")
    if stop_when_agree is not None and not 2 <= stop_when_agree <= samples:
        return (f"--stop-when-agree must be between 2 and --samples ({samples}), not "
                f"{stop_when_agree}")
    if workers is not None and workers < 1:
        return f"--workers must be at least 1, not {workers}"
    return None


class SamplesConfig(BaseModel):
    """How many attempts run at one task, how many at once, and how one is picked."""

    samples: int = Field(1, description="Attempts at the task, each in its own worktree and "
                         "sandbox, each recorded; the selector picks one.")
    max_samples: int = Field(16, description="The most --samples may ask for (each attempt "
                             "is a whole episode).")
    workers: int | None = Field(None, description="Attempts that run at once; default: "
                                f"--samples, at most {DEFAULT_WORKERS}.")
    stop_when_agree: int | None = Field(None, description="Stop once this many attempts made "
                                        "the same change (running ones are interrupted).")
    vote: bool = Field(True, description="Count attempts that made the same change together "
                       "(off: the tests alone decide).")
    judge: bool = Field(False, description="Ask the model to break a tie the tests and the "
                        "vote leave.")
    attempt_timeout_s: float | None = Field(None, gt=0, description="Seconds an attempt may "
                                            "run; past it, it is interrupted and loses.")
    test_timeout_s: float = Field(600.0, gt=0, description="Seconds each of the selector's "
                                  "test runs may take.")

    @model_validator(mode="after")
    def _check(self) -> SamplesConfig:
        problem = samples_problem(self.samples, self.max_samples, self.stop_when_agree,
                                  self.workers)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def parallel(self) -> int:
        """Attempts that run at once."""
        return self.workers or min(self.samples, DEFAULT_WORKERS)
