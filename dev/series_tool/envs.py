"""Virtualenvs for a core baseline: the work tree installed editable plus test dependencies."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from series_tool import sdist, tree
from series_tool.config import Baseline, Config
from series_tool.errors import SeriesError

PYTHON = "3.11"
STAMP = ".series-env.json"
TEST_REQUIREMENTS = "dev/requirements/test.in"


def _uv() -> str:
    uv = shutil.which("uv")
    if not uv:
        raise SeriesError("uv is not installed: `python3 -m pip install uv` (scripts/test does it for you)")
    return uv


def _tree_components(cfg: Config, baseline: Baseline) -> list[str]:
    return [c.path for c in cfg.components if c.path not in baseline.from_tree_except]


def _requirements(cfg: Config, baseline: Baseline, *, for_lock: bool) -> list[str]:
    """uv pip arguments naming everything the baseline's venv holds."""
    args: list[str] = []
    for path in _tree_components(cfg, baseline):
        args += ["-e", str(cfg.work_tree / path)]
    cache = sdist.cache_dir(cfg.root)
    for pin in baseline.pins:
        # The lock resolves by name; the venv gets exactly the verified sdist.
        args.append(f"{pin.dist}=={pin.version}" if for_lock else str(sdist.fetch(pin, cache)))
    args += ["-r", str(cfg.root / TEST_REQUIREMENTS)]
    return args


def _inputs_digest(cfg: Config, baseline: Baseline) -> str:
    digest = hashlib.sha256()
    digest.update(PYTHON.encode())
    digest.update(json.dumps([[p.dist, p.version, p.sha256] for p in baseline.pins]).encode())
    for rel in (baseline.lock, TEST_REQUIREMENTS):
        path = cfg.root / rel
        digest.update(path.read_bytes() if path.exists() else b"-")
    for path in _tree_components(cfg, baseline):
        # Editable installs follow source edits by themselves; only metadata needs a reinstall.
        digest.update((cfg.work_tree / path / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def ensure(cfg: Config, baseline: Baseline, *, force: bool = False) -> str:
    """Create or update the baseline's venv; a no-op when none of its inputs changed."""
    state = tree.read_state(cfg)
    if not state.get("complete") or state.get("pins") != cfg.pins_fingerprint():
        raise SeriesError("the work tree is missing or stale: run `dev/series materialize` first")
    venv = cfg.root / baseline.venv
    stamp = venv / STAMP
    digest = _inputs_digest(cfg, baseline)
    if not force and stamp.exists() and json.loads(stamp.read_text()).get("digest") == digest:
        return f"{baseline.venv} ({baseline.name}) is up to date"
    uv = _uv()
    if not (venv / "bin" / "python").exists():
        _run([uv, "venv", "-q", "--python", PYTHON, str(venv)], cfg.root)
    stamp.unlink(missing_ok=True)
    cmd = [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "--no-sources"]
    lock = cfg.root / baseline.lock
    if lock.exists():
        cmd += ["-c", str(lock)]
    _run([*cmd, *_requirements(cfg, baseline, for_lock=False)], cfg.root)
    stamp.write_text(json.dumps({"digest": digest, "baseline": baseline.name}) + "\n")
    return f"{baseline.venv} ({baseline.name}) installed"


def lock(cfg: Config, baseline: Baseline, *, upgrade: bool = False) -> str:
    """Resolve the baseline's dependencies into ``dev/lock/<name>.txt`` (exact versions)."""
    uv = _uv()
    target = cfg.root / baseline.lock
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        req_in = Path(tmp) / "requirements.in"
        req_in.write_text("\n".join(_as_lines(_requirements(cfg, baseline, for_lock=True))) + "\n")
        out = Path(tmp) / "lock.txt"
        cmd = [uv, "pip", "compile", "-q", "--python-version", PYTHON, "--no-sources", "--prerelease=allow"]
        cmd += ["--no-header", "--no-annotate", "-o", str(out), str(req_in)]
        if target.exists() and not upgrade:
            shutil.copy(target, out)  # uv keeps the versions it finds in the output file
        _run(cmd, cfg.root)
        pinned = [
            line
            for line in out.read_text().splitlines()
            if line and not line.startswith(("-e", "#", "file:")) and "@ file:" not in line
        ]
    body = "\n".join(sorted(pinned, key=lambda s: re.split(r"[=<>!~ ;]", s, maxsplit=1)[0].lower()))
    header = (
        f"# Exact versions for the {baseline.name} baseline's venv, used as constraints by `dev/series env`.\n"
        "# Made by `dev/series lock`; re-run it (with --upgrade to move versions) after dependency changes.\n"
    )
    target.write_text(header + body + "\n")
    return f"wrote {baseline.lock} ({len(pinned)} pins)"


def _as_lines(args: list[str]) -> list[str]:
    lines, i = [], 0
    while i < len(args):
        if args[i] in ("-e", "-r"):
            lines.append(f"{args[i]} {args[i + 1]}")
            i += 2
        else:
            lines.append(args[i])
            i += 1
    return lines


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SeriesError(f"{' '.join(cmd[:4])} ... failed:\n{(proc.stderr or proc.stdout).strip()[-4000:]}")
