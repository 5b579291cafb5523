"""One kept candidate -> one suite task: its bundle, gold patch, statement and oracle script."""

from __future__ import annotations

import hashlib
import random
import re
import threading
from typing import TYPE_CHECKING

from finetune.fix_in_view import fix_in_view
from finetune.mutations import apply_site, find_sites
from finetune.statements import Failure, write_statement
from finetune.suite import SuiteTask
from finetune.synthesis_oracle import choose_style, oracle_script, unique_edit
from finetune.synthesis_repo import Repository, export_task
from finetune.synthesis_validate import Verdict

if TYPE_CHECKING:
    from finetune.mutations import Site
    from finetune.synthesis import SynthesisOptions


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def wrong_variant(buggy: str, original: str, path: str) -> str | None:
    """The buggy file with a second, different bug at the place of the first (a wrong fix)."""
    fix = unique_edit(buggy, original)
    lines = range(fix.line, fix.line + max(1, fix.old.count("\n")))
    for site in find_sites(buggy, path):
        if site.line not in lines:
            continue
        wrong = apply_site(site)
        if wrong in (buggy, original):
            continue
        try:
            unique_edit(buggy, wrong)
            unique_edit(wrong, original)
        except ValueError:
            continue
        return wrong
    return None


def build_task(repo: Repository, site: Site, original: str, buggy: str, verdict: Verdict,
               test_command: str, options: SynthesisOptions, _rng: random.Random,
               export_lock: threading.Lock) -> SuiteTask:
    """The suite task of a validated candidate (bundle written under OUT/repos)."""
    digest = hashlib.sha256(f"{repo.name}\0{site.path}\0{buggy}".encode()).hexdigest()[:10]
    rng = random.Random(f"{options.seed}:{digest}")
    report = verdict.report
    assert report is not None
    failures = [Failure(t, report.messages.get(t, ""), report.failure_text(t))
                for t in verdict.fail_to_pass]
    failures.sort(key=lambda f: (not f.section, f.node_id))
    fix = unique_edit(buggy, original)
    hidden = fix.old.splitlines() + fix.new.splitlines()
    statement, phrasing = write_statement(failures, test_command, site.path, hidden, rng)
    style = choose_style(rng, options.recovery_share)
    wrong = wrong_variant(buggy, original, site.path) if style == "wrong_edit" else None
    if style == "wrong_edit" and wrong is None:
        style = "run_first"
    test_id = failures[0].node_id
    test_file = test_id.split("::")[0]
    test_source = repo.read(test_file) if test_file in repo.files else ""
    oracle = oracle_script(site.path, buggy, original, site.function, test_id, test_source,
                           test_command, style, wrong,
                           named=re.search(rf"\b{re.escape(site.function.split('.')[-1])}\b",
                                           statement) is not None)
    instance_id = f"{_slug(repo.name)}-{site.kind.replace('_', '-')}-{digest}"
    bundle = options.out / "repos" / f"{instance_id}.bundle"
    with export_lock:
        base, patch = export_task(repo, site.path, buggy, bundle, f"{repo.name}")
    return SuiteTask.model_validate({
        "instance_id": instance_id, "problem_statement": statement, "base_commit": base,
        "repo_path": str(bundle.relative_to(options.out)), "test_command": test_command,
        "split": "train", "FAIL_TO_PASS": verdict.fail_to_pass,
        "PASS_TO_PASS": verdict.pass_to_pass, "patch": patch, "oracle": oracle,
        "repo": repo.name, "repo_name": repo.name, "kind": site.kind, "path": site.path,
        "function": site.function, "line": site.line, "phrasing": phrasing,
        "oracle_style": style, "fix_in_view": fix_in_view(buggy, original, statement),
    })
