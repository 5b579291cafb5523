"""`agent finetune report`: the curves of a run as a PNG and a markdown summary with the
before/after evaluation table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finetune.run_dir import MANIFEST, read_log_history

PANELS: list[tuple[str, list[str]]] = [
    ("loss", ["loss"]),
    ("reward", ["reward", "rewards/verify_reward/mean", "rewards/format_reward/mean"]),
    ("episode length", ["episode/steps", "completions/mean_length"]),
]
"""(title, log keys) of each plot; a panel with no logged key is left out."""

TABLE_COLUMNS = ["pass@1", "pass@k", "format_error_rate", "mean_steps", "mean_tokens"]


def series(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for entry in history:
        if key in entry and isinstance(entry[key], int | float) and "step" in entry:
            steps.append(int(entry["step"]))
            values.append(float(entry[key]))
    return steps, values


def plot_curves(history: list[dict[str, Any]], png: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, [k for k in keys if series(history, k)[0]]) for name, keys in PANELS]
    panels = [(name, keys) for name, keys in panels if keys] or [("loss", [])]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for axis, (name, keys) in zip(axes[0], panels, strict=True):
        for key in keys:
            steps, values = series(history, key)
            axis.plot(steps, values, marker="o", markersize=3, label=key)
        axis.set_title(name)
        axis.set_xlabel("step")
        if keys:
            axis.legend(fontsize=7)
        else:
            axis.text(0.5, 0.5, "nothing logged", ha="center", transform=axis.transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def eval_table(evals: dict[str, Path]) -> str:
    """A markdown table with one row per evaluation report."""
    header = ["eval", "model", "split", "tasks", "episodes", *TABLE_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, path in evals.items():
        report = json.loads(Path(path).read_text())
        summary = report["summary"]
        model = report["model"] + (f" + {Path(report['adapter']).name}" if report.get("adapter")
                                   else "")
        cells = [label, model, str(report.get("split")), str(summary["tasks"]),
                 str(summary["episodes"]), *[_cell(summary.get(c)) for c in TABLE_COLUMNS]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.0f}"
    return str(value)


def find_evals(run_dir: Path, given: dict[str, Path] | None = None) -> dict[str, Path]:
    """The given reports, then the evaluation reports in `run_dir/evals/*.json` (labelled by
    file name; other JSON there, such as a solve result, is left out)."""
    found = dict(given or {})
    for path in sorted((Path(run_dir) / "evals").glob("*.json")):
        if path.stem not in found and _is_eval_report(path):
            found[path.stem] = path
    return found


def _is_eval_report(path: Path) -> bool:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and isinstance(report.get("summary"), dict)


def write_report(run_dir: Path, evals: dict[str, Path] | None = None) -> tuple[Path, Path]:
    """Write `run_dir/report.png` and `run_dir/report.md`; return their paths."""
    run_dir = Path(run_dir)
    manifest_path = run_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    history = read_log_history(run_dir)
    kind = manifest.get("kind", "training")
    png = plot_curves(history, run_dir / "report.png",
                      f"{kind} of {manifest.get('base_model', '?')} ({run_dir.name})")
    metrics = manifest.get("metrics", {})
    data = manifest.get("data", {})
    lines = [f"# {kind.upper()} run {run_dir.name}", "",
             f"- base model: `{manifest.get('base_model', '?')}`",
             f"- data: `{json.dumps(data)}`",
             f"- steps: {metrics.get('steps', '?')}, {metrics.get('seconds_per_step', '?')} s "
             f"per step, {metrics.get('seconds', '?')} s in all"]
    if "groups" in metrics:
        lines.append(f"- GRPO groups: {metrics['groups']}, of which "
                     f"{metrics['groups_all_equal']} had all-equal rewards (no signal)")
    lines += ["", f"![curves]({png.name})", ""]
    found = find_evals(run_dir, evals)
    lines += ["## Evaluation", "", eval_table(found) if found else
              "No evaluation reports: run `agent eval SUITE --save RUN/evals/NAME.json`.", ""]
    md = run_dir / "report.md"
    md.write_text("\n".join(lines))
    return png, md
