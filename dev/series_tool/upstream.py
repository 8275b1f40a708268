"""`dev/series upstream`: the series as branches in an apache/airflow checkout, one per patch."""

from __future__ import annotations

import tempfile
from pathlib import Path

from series_tool import git, tree
from series_tool.config import Config
from series_tool.errors import SeriesError


def branches(
    cfg: Config,
    checkout: Path,
    *,
    base: str = "HEAD",
    components: list[str] | None = None,
    prefix: str = "series/",
    force: bool = False,
) -> list[str]:
    """Make ``<prefix><component>/<patch>`` for each patch, stacked within its component.

    Branch N of a component holds that component's patches 1..N, so it can be pushed as
    a pull request that depends on the branch before it. The checkout's own work tree
    and current branch are never touched: the patches are applied in a temporary worktree.
    """
    checkout = checkout.resolve()
    if not git.is_repo(checkout):
        raise SeriesError(f"{checkout} is not a git checkout")
    base_sha = git.out(checkout, "rev-parse", "--verify", f"{base}^{{commit}}", user_config=True)
    comps = [cfg.component(c) for c in components] if components else list(cfg.components)
    comps = [c for c in comps if cfg.patch_files(c)]
    if not comps:
        raise SeriesError("no patches to apply for the chosen components")
    identity = {}
    if not git.out(checkout, "config", "user.email", check=False, user_config=True):
        identity = {"GIT_COMMITTER_NAME": git.TOOL_NAME, "GIT_COMMITTER_EMAIL": git.TOOL_EMAIL}
    lines = []
    with tempfile.TemporaryDirectory(prefix="series-upstream-") as tmp:
        work = Path(tmp) / "wt"
        git.run(checkout, "worktree", "add", "-q", "--detach", str(work), base_sha, user_config=True)
        try:
            for comp in comps:
                git.run(work, "checkout", "-q", "--detach", base_sha, user_config=True)
                previous = base
                for patch in cfg.patch_files(comp):
                    proc = git.run(
                        work, "am", "-q", "-3", str(patch), env=identity, check=False, user_config=True
                    )
                    if proc.returncode != 0:
                        text = (proc.stdout + proc.stderr).decode(errors="replace")
                        git.run(work, "am", "--abort", check=False, user_config=True)
                        errors = [ln for ln in text.splitlines() if ln.startswith("error:")] or [text.strip()]
                        failure = tree.ApplyFailure(comp.path, patch, errors)
                        raise SeriesError(
                            f"{failure.describe(cfg.root)}\n(applying to {base} = {base_sha[:12]})"
                        )
                    name = f"{prefix}{comp.slug}/{patch.stem}"
                    lines.append(_set_branch(checkout, name, git.head(work), force) + f"  (on {previous})")
                    previous = name
        finally:
            git.run(checkout, "worktree", "remove", "--force", str(work), check=False, user_config=True)
    return lines


def _set_branch(checkout: Path, name: str, sha: str, force: bool) -> str:
    ref = f"refs/heads/{name}"
    if git.has_ref(checkout, ref):
        old = git.out(checkout, "rev-parse", ref)
        same = git.run(checkout, "diff", "--quiet", old, sha, check=False).returncode == 0
        if same:
            return f"unchanged {name}"
        if not force:
            raise SeriesError(f"branch {name} exists with other content; pass --force to move it")
        git.run(checkout, "update-ref", ref, sha, old, user_config=True)
        return f"moved     {name}"
    git.run(checkout, "update-ref", ref, sha, "", user_config=True)
    return f"created   {name}"
