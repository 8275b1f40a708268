"""`dev/series check`: what CI and the pre-commit hook insist on."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from series_tool import git, sdist, tree
from series_tool.config import Config
from series_tool.errors import SeriesError


def patch_message(patch: Path) -> str:
    """The commit message inside a format-patch file (subject and body, no diff)."""
    lines = patch.read_text(errors="replace").splitlines()
    subject, body, in_body = "", [], False
    for i, line in enumerate(lines):
        if not in_body:
            if line.startswith("Subject: "):
                subject = line[len("Subject: ") :].removeprefix("[PATCH] ")
                j = i + 1
                while j < len(lines) and lines[j].startswith(" "):
                    subject += lines[j]
                    j += 1
            elif line == "" and subject:
                in_body = True
            continue
        if line == "---":
            break
        body.append(line)
    return subject + "\n\n" + "\n".join(body).strip() + "\n"


def check(cfg: Config, *, apply: bool = True) -> list[str]:
    problems = []
    for comp in cfg.components:
        for patch in cfg.patch_files(comp):
            missing = tree.missing_trailers(patch_message(patch))
            if missing:
                problems.append(
                    f"{patch.relative_to(cfg.root)}: the commit message lacks the trailer(s) "
                    f"{', '.join(m + ':' for m in missing)} (see README: patch trailers)"
                )
    if apply:
        problems += _fresh_apply(cfg)
    if git.is_repo(cfg.work_tree):
        lines, pending = tree.status(cfg)
        if pending:
            problems.append("the work tree has work that is not exported:\n  " + "\n  ".join(lines))
    return problems


def _fresh_apply(cfg: Config) -> list[str]:
    """Apply every series to freshly unpacked pins, away from the developer's work tree."""
    with tempfile.TemporaryDirectory(prefix="series-check-") as tmp:
        fresh = dataclasses.replace(cfg, work_tree=Path(tmp) / "tree")
        try:
            sdists = {c.path: sdist.fetch(c.pin, sdist.cache_dir(cfg.root)) for c in cfg.components}
            tree._make_baseline(fresh, sdists, cfg.pins_fingerprint(), log=lambda *_: None)
            failure = tree.apply_series(fresh, log=lambda *_: None)
        except SeriesError as exc:
            return [str(exc)]
        return [failure.describe(cfg.root)] if failure else []
