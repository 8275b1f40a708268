"""The work tree: materialize the pins plus every series, export commits back into patches."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from series_tool import git, sdist
from series_tool.config import Component, Config
from series_tool.errors import SeriesError

BASELINE_TAG = "series-baseline"
STATE_FILE = "series-state.json"
REQUIRED_TRAILERS = ("Bug", "Forwarded")
# Never part of a patch: what tests, builds and editable installs leave in the tree.
EXCLUDES = """\
__pycache__/
*.py[cod]
*.egg-info/
.pytest_cache/
.ruff_cache/
.mypy_cache/
/build/
/dist/
"""
# format-patch options that make a commit's patch depend on the commit alone:
# no commit id, no "n/m" numbering, no git version signature, fixed diff settings.
FORMAT_PATCH = (
    "format-patch",
    "--zero-commit",
    "--no-numbered",
    "--no-signature",
    "--subject-prefix=PATCH",
    "--no-to",
    "--no-cc",
    "--no-thread",
    "--diff-algorithm=myers",
    "--indent-heuristic",
    "-M",
    "-U3",
    "--inter-hunk-context=0",
    "--abbrev=12",
)


# --------------------------------------------------------------------------- state


def _state_path(cfg: Config) -> Path:
    return cfg.work_tree / ".git" / STATE_FILE


def read_state(cfg: Config) -> dict:
    try:
        return json.loads(_state_path(cfg).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _write_state(cfg: Config, **values) -> None:
    state = read_state(cfg)
    state.update(values)
    _state_path(cfg).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------- materialize


@dataclass
class ApplyFailure:
    component: str
    patch: Path
    errors: list[str]
    hunks: list[str] = field(default_factory=list)

    def describe(self, root: Path) -> str:
        try:
            name = self.patch.relative_to(root)
        except ValueError:
            name = self.patch
        lines = [f"patch {name} does not apply:"]
        lines += [f"  {line}" for line in self.errors]
        lines += [f"  failing hunk: {hunk}" for hunk in self.hunks]
        return "\n".join(lines)


def materialize(cfg: Config, *, force: bool = False, log=print) -> str:
    """Make the work tree hold the pins plus every series; returns a one-line summary."""
    tree = cfg.work_tree
    cache = sdist.cache_dir(cfg.root)
    # Everything is downloaded and verified before the tree is touched.
    sdists = {comp.path: sdist.fetch(comp.pin, cache) for comp in cfg.components}
    pins_fp = cfg.pins_fingerprint()
    patches_fp = cfg.patches_fingerprint()

    if tree.exists():
        if not git.is_repo(tree):
            raise SeriesError(f"{tree} exists but is not a git work tree made by dev/series; move it away")
        if git.am_in_progress(tree):
            raise SeriesError(
                f"a git am/rebase is in progress in {tree}: finish it (git am --continue) "
                "and export, or abort it (git am --abort)"
            )
        state = read_state(cfg)
        unexported = _unexported_work(cfg, state)
        if (
            not unexported
            and state.get("complete")
            and state.get("pins") == pins_fp
            and state.get("patches") == patches_fp
        ):
            return f"{_rel(cfg, tree)} is up to date ({_count(cfg)} patches applied)"
        if unexported and not force:
            raise SeriesError(
                f"{_rel(cfg, tree)} has work that is not exported:\n"
                + "\n".join(f"  {line}" for line in unexported)
                + "\nRun `dev/series export` first, or `dev/series materialize --force` "
                "(the old commits are kept in a bundle under .cache/backups/)."
            )
        _backup(cfg, log)
    if tree.exists() and git.has_ref(tree, BASELINE_TAG) and read_state(cfg).get("pins") == pins_fp:
        git.run(tree, "am", "--abort", check=False)
        git.run(tree, "checkout", "-q", "-f", "-B", "main", BASELINE_TAG)
        git.run(tree, "clean", "-q", "-f", "-d")
    else:
        _make_baseline(cfg, sdists, pins_fp, log)
    _write_state(cfg, pins=pins_fp, patches=None, complete=False, head=git.head(tree))
    failure = apply_series(cfg, log=log)
    if failure:
        _write_state(cfg, head=git.head(tree), failed=str(failure.patch))
        raise SeriesError(
            failure.describe(cfg.root)
            + f"\nThe work tree stays at the last patch that applied ({_rel(cfg, tree)}, "
            f"HEAD {git.head(tree)[:12]})."
        )
    _write_state(cfg, patches=patches_fp, complete=True, head=git.head(tree), failed=None)
    return f"{_rel(cfg, tree)} materialized: baseline plus {_count(cfg)} patches"


def _count(cfg: Config) -> int:
    return sum(len(cfg.patch_files(c)) for c in cfg.components)


def _rel(cfg: Config, path: Path) -> str:
    try:
        return str(path.relative_to(cfg.root))
    except ValueError:
        return str(path)


def _backup(cfg: Config, log) -> None:
    """Keep every commit of a tree about to be rebuilt in a git bundle under .cache/backups/."""
    tree = cfg.work_tree
    if git.out(tree, "rev-list", "-n", "1", f"{BASELINE_TAG}..HEAD", check=False) == "":
        return  # nothing beyond the baseline: nothing to keep
    sha = git.head(tree)
    folder = cfg.root / ".cache" / "backups"
    folder.mkdir(parents=True, exist_ok=True)
    bundle = folder / f"{sha[:12]}.bundle"
    git.run(tree, "bundle", "create", "-q", str(bundle), "HEAD", "--not", BASELINE_TAG)
    log(f"kept the old commits in {_rel(cfg, bundle)} (git fetch it into any clone of the baseline)")


def _make_baseline(cfg: Config, sdists: dict[str, Path], pins_fp: str, log) -> None:
    tree = cfg.work_tree
    tree.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".series-", dir=tree.parent))
    try:
        for comp in cfg.components:
            log(f"unpacking {comp.pin.filename} -> {comp.path}/")
            sdist.unpack(sdists[comp.path], comp.pin, staging / comp.path)
        git.run(staging, "init", "-q", "-b", "main")
        (staging / ".git" / "info").mkdir(parents=True, exist_ok=True)
        (staging / ".git" / "info" / "exclude").write_text(EXCLUDES)
        git.run(staging, "add", "-A", "-f")
        message = "Baseline: upstream sdists\n\n" + "".join(
            f"{c.path}: {c.pin.dist} {c.pin.version} sha256:{c.pin.sha256}\n" for c in cfg.components
        )
        git.run(
            staging,
            "commit",
            "-q",
            "--no-verify",
            "-m",
            message,
            env={
                "GIT_AUTHOR_NAME": git.TOOL_NAME,
                "GIT_AUTHOR_EMAIL": git.TOOL_EMAIL,
                "GIT_AUTHOR_DATE": git.BASELINE_DATE,
                "GIT_COMMITTER_DATE": git.BASELINE_DATE,
            },
        )
        git.run(staging, "tag", "-f", BASELINE_TAG)
        # Local identity only when none is configured, so that hand-made commits work.
        if not git.out(staging, "config", "user.email", check=False, user_config=True):
            git.run(staging, "config", "user.name", "Series Developer")
            git.run(staging, "config", "user.email", "developer@localhost")
        if tree.exists():
            shutil.rmtree(tree)
        staging.rename(tree)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    _write_state(cfg, pins=pins_fp)


_PATCH_FAILED = re.compile(r"^error: patch failed: (?P<file>.+):(?P<line>\d+)$")


def apply_series(cfg: Config, *, components: list[Component] | None = None, log=print) -> ApplyFailure | None:
    """Apply each component's patches in order, one ``git am`` per patch.

    One patch at a time means a failure leaves the tree at the last good commit.
    """
    tree = cfg.work_tree
    for comp in components or cfg.components:
        for patch in cfg.patch_files(comp):
            proc = git.run(
                tree,
                "am",
                "-q",
                "--committer-date-is-author-date",
                "--no-3way",
                str(patch),
                check=False,
            )
            if proc.returncode != 0:
                text = (proc.stdout + proc.stderr).decode(errors="replace")
                git.run(tree, "am", "--abort", check=False)
                errors = [ln for ln in text.splitlines() if ln.startswith("error:")] or text.splitlines()[-3:]
                hunks = []
                for line in errors:
                    match = _PATCH_FAILED.match(line)
                    if match:
                        hunks += _hunk_headers(patch, match["file"], int(match["line"]))
                return ApplyFailure(comp.path, patch, errors, hunks)
        if cfg.patch_files(comp):
            log(f"applied {len(cfg.patch_files(comp))} patches to {comp.path}")
    return None


def _hunk_headers(patch: Path, file: str, line: int) -> list[str]:
    """The hunk header(s) in ``patch`` for ``file`` starting at ``line`` (what git am reports)."""
    found, current = [], None
    for text in patch.read_text(errors="replace").splitlines():
        if text.startswith("diff --git "):
            current = text.split(" b/", 1)[-1]
        elif current == file and text.startswith("@@ "):
            match = re.match(r"@@ -(\d+)", text)
            if match and int(match.group(1)) == line:
                found.append(f"{file} {text}")
    return found or [f"{file} at line {line}"]


# -------------------------------------------------------------------------- export


@dataclass
class ExportPlan:
    # component path -> list of (file name, bytes) in series order
    patches: dict[str, list[tuple[str, bytes]]]
    warnings: list[str]


def plan_export(cfg: Config) -> ExportPlan:
    """Turn the commits after the baseline into patch files, per component, in memory."""
    tree = cfg.work_tree
    _require_tree(cfg)
    commits = git.out(tree, "rev-list", "--reverse", "--topo-order", f"{BASELINE_TAG}..HEAD").split()
    per_comp: dict[str, list[str]] = {c.path: [] for c in cfg.components}
    warnings = []
    for sha in commits:
        parents = git.out(tree, "rev-list", "--parents", "-n", "1", sha).split()[1:]
        subject = git.out(tree, "log", "-1", "--format=%s", sha)
        if len(parents) != 1:
            raise SeriesError(f"commit {sha[:12]} ({subject!r}) is a merge; the series must be linear")
        files = git.out(
            tree, "diff-tree", "--no-commit-id", "--name-only", "-r", "--no-renames", sha
        ).splitlines()
        if not files:
            raise SeriesError(f"commit {sha[:12]} ({subject!r}) changes nothing; drop it")
        owners: dict[str, list[str]] = {}
        for file in files:
            comp = cfg.component_for_file(file)
            owners.setdefault(comp.path if comp else "(no component)", []).append(file)
        if len(owners) != 1 or "(no component)" in owners:
            detail = "\n".join(
                f"  {owner}: {', '.join(sorted(fs)[:5])}" for owner, fs in sorted(owners.items())
            )
            raise SeriesError(
                f"commit {sha[:12]} ({subject!r}) touches {len(owners)} places; each commit must "
                f"stay inside one component so that it is one patch:\n{detail}\n"
                "Split it (git rebase -i, edit, git reset HEAD^, commit per component)."
            )
        comp_path = next(iter(owners))
        per_comp[comp_path].append(sha)
        missing = missing_trailers(git.out(tree, "log", "-1", "--format=%B", sha))
        if missing:
            warnings.append(f"{comp_path}: {subject!r} lacks the trailer(s) {', '.join(missing)}")
    patches: dict[str, list[tuple[str, bytes]]] = {}
    with tempfile.TemporaryDirectory(prefix="series-export-") as tmp:
        for comp_path, shas in per_comp.items():
            files = []
            for number, sha in enumerate(shas, start=1):
                outdir = Path(tmp) / f"{len(patches)}-{number}"
                git.run(tree, *FORMAT_PATCH, f"--start-number={number}", "-o", str(outdir), "-1", sha)
                (produced,) = outdir.iterdir()
                files.append((produced.name, produced.read_bytes()))
            patches[comp_path] = files
    return ExportPlan(patches, warnings)


def trailers(message: str) -> dict[str, str]:
    """The ``Key: value`` trailers of the message's last paragraph."""
    block = message.strip().split("\n\n")[-1]
    found = {}
    for line in block.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and " " not in key.strip():
            found[key.strip()] = value.strip()
    return found


def missing_trailers(message: str) -> list[str]:
    present = trailers(message)
    return [t for t in REQUIRED_TRAILERS if t not in present]


@dataclass
class Diff:
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed)


def compare(cfg: Config, plan: ExportPlan) -> dict[str, Diff]:
    result = {}
    for comp in cfg.components:
        diff = Diff()
        wanted = dict(plan.patches.get(comp.path, []))
        existing = {p.name: p for p in cfg.patch_files(comp)}
        for name, data in wanted.items():
            if name in existing and existing[name].read_bytes() == data:
                diff.unchanged += 1
            else:
                diff.written.append(name + (" (changed)" if name in existing else " (new)"))
        diff.removed = sorted(set(existing) - set(wanted))
        result[comp.path] = diff
    return result


def export(cfg: Config, *, force: bool = False, log=print) -> dict[str, Diff]:
    """Write the tree's commits into the components' patch files; unchanged files keep their bytes."""
    tree = cfg.work_tree
    _require_tree(cfg)
    if git.am_in_progress(tree):
        raise SeriesError(f"a git am/rebase is in progress in {tree}: finish or abort it before exporting")
    state = read_state(cfg)
    if not state.get("complete") and not force:
        raise SeriesError(
            "the last materialize stopped at a patch that did not apply "
            f"({state.get('failed') or 'unknown'}); exporting now would drop the patches after it. "
            "Fix the series (or re-materialize) first, or pass --force."
        )
    plan = plan_export(cfg)
    for warning in plan.warnings:
        log(f"warning: {warning}")
    diffs = compare(cfg, plan)
    for comp in cfg.components:
        folder = cfg.patches_dir(comp)
        wanted = dict(plan.patches.get(comp.path, []))
        if wanted:
            folder.mkdir(parents=True, exist_ok=True)
        for name, data in wanted.items():
            target = folder / name
            if not target.exists() or target.read_bytes() != data:
                target.write_bytes(data)
        for name in diffs[comp.path].removed:
            (folder / name).unlink()
    _write_state(cfg, head=git.head(tree), patches=cfg.patches_fingerprint(), complete=True, failed=None)
    return diffs


def _require_tree(cfg: Config) -> None:
    if not git.is_repo(cfg.work_tree) or not git.has_ref(cfg.work_tree, BASELINE_TAG):
        raise SeriesError(f"no work tree at {_rel(cfg, cfg.work_tree)}: run `dev/series materialize` first")


def _unexported_work(cfg: Config, state: dict) -> list[str]:
    """What would be lost by rebuilding the tree: edits, and commits not in the patch files."""
    tree = cfg.work_tree
    lines = [f"uncommitted: {line}" for line in git.dirty(tree)]
    if state.get("head") != git.head(tree) and git.has_ref(tree, BASELINE_TAG):
        try:
            diffs = compare(cfg, plan_export(cfg))
        except SeriesError as exc:
            return [*lines, f"commits that cannot be exported: {exc}"]
        for comp_path, diff in diffs.items():
            lines += [f"not exported: {comp_path}/patches/{name}" for name in diff.written]
    return lines


# -------------------------------------------------------------------------- status


def status(cfg: Config) -> tuple[list[str], bool]:
    """Lines describing the tree, and whether anything is left to export."""
    tree = cfg.work_tree
    if not git.is_repo(tree):
        return [f"{_rel(cfg, tree)}: not materialized (run `dev/series materialize`)"], False
    state = read_state(cfg)
    lines = []
    pending = False
    if state.get("pins") != cfg.pins_fingerprint():
        lines.append("the pins in pyproject.toml changed since the tree was made: re-materialize")
    if not state.get("complete"):
        lines.append(
            f"the series is applied only partly: {state.get('failed') or 'materialize did not finish'}"
        )
    elif state.get("head") == git.head(tree) and state.get("patches") != cfg.patches_fingerprint():
        lines.append("the patch files changed since the tree was made (a pull?): re-materialize")
    if git.am_in_progress(tree):
        lines.append("a git am/rebase is in progress: finish it (git am --continue) or abort it")
        pending = True
    edits = git.dirty(tree)
    if edits:
        pending = True
        lines.append("uncommitted edits (commit them, then export):")
        lines += [f"  {line}" for line in edits]
    if git.has_ref(tree, BASELINE_TAG) and not git.am_in_progress(tree):
        plan = plan_export(cfg)
        diffs = compare(cfg, plan)
        for comp_path, diff in diffs.items():
            if diff.changed:
                pending = True
                lines.append(f"{comp_path}: not exported")
                lines += [f"  would write {name}" for name in diff.written]
                lines += [f"  would remove {name}" for name in diff.removed]
        lines += [f"warning: {w}" for w in plan.warnings]
    if not lines:
        lines.append(f"{_rel(cfg, tree)}: clean; every commit is exported ({_count(cfg)} patches)")
    return lines, pending
