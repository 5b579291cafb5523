"""Per-test outcomes from pytest's report: moved to `trajectories.pytest_outcomes` (the agent's
patch selection reads them too); kept here so `finetune` imports keep working."""

from trajectories.pytest_outcomes import (
    REPORT_ARGS,
    TestReport,
    parse_report,
    split_node_id,
)

__all__ = ["REPORT_ARGS", "TestReport", "parse_report", "split_node_id"]
