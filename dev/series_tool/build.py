"""`dev/series build`: wheels and sdists of the patched components, with a local version label."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from series_tool import tree
from series_tool.config import Component, Config
from series_tool.errors import SeriesError

_LABEL = re.compile(r"^[a-z0-9]+(\.[a-z0-9]+)*$")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache", "build", "dist")


def default_label(cfg: Config, comp: Component) -> str:
    patches = cfg.patch_files(comp)
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in patches)).hexdigest()[:8]
    return f"series{len(patches)}.{digest}"


def set_version(src: Path, old: str, new: str) -> list[Path]:
    """Replace the component's version where upstream states it: pyproject and ``__version__``."""
    changed = []
    pyproject = src / "pyproject.toml"
    text = pyproject.read_text()
    text, count = re.subn(rf'(?m)^version = "{re.escape(old)}"$', f'version = "{new}"', text)
    if count:
        pyproject.write_text(text)
        changed.append(pyproject)
    for init in sorted((src / "src").rglob("__init__.py")):
        if init.parts[-2] == "src" or "tests" in init.parts:
            continue
        body = init.read_text()
        body, count = re.subn(rf'(?m)^__version__ = "{re.escape(old)}"$', f'__version__ = "{new}"', body)
        if count:
            init.write_text(body)
            changed.append(init)
    if not changed:
        raise SeriesError(f"{src.name}: found no version {old!r} in pyproject.toml or __version__")
    return changed


def build(cfg: Config, *, components: list[str] | None, outdir: Path, label: str | None) -> list[str]:
    state = tree.read_state(cfg)
    if not state.get("complete") or state.get("pins") != cfg.pins_fingerprint():
        raise SeriesError("the work tree is missing or stale: run `dev/series materialize` first")
    _, pending = tree.status(cfg)
    if pending:
        raise SeriesError("the work tree has unexported work; export it so dist/ matches the patches")
    if label is not None and not _LABEL.match(label):
        raise SeriesError(
            f"--label {label!r}: a local version label is lower-case letters/digits joined by dots"
        )
    comps = (
        [cfg.component(c) for c in components]
        if components
        else [c for c in cfg.components if cfg.patch_files(c) and c.path != "devel-common"]
    )
    if not comps:
        raise SeriesError("no component has patches yet: nothing to build (name one with --component)")
    uv = shutil.which("uv")
    if not uv:
        raise SeriesError("uv is not installed")
    outdir.mkdir(parents=True, exist_ok=True)
    out = []
    for comp in comps:
        version = f"{comp.pin.version}+{label or default_label(cfg, comp)}"
        with tempfile.TemporaryDirectory(prefix="series-build-") as tmp:
            src = Path(tmp) / comp.slug
            shutil.copytree(cfg.work_tree / comp.path, src, ignore=_IGNORE)
            set_version(src, comp.pin.version, version)
            proc = subprocess.run(
                [
                    uv,
                    "build",
                    "-q",
                    "--sdist",
                    "--wheel",
                    "--no-sources",
                    "-o",
                    str(Path(tmp) / "out"),
                    str(src),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise SeriesError(f"building {comp.path} failed:\n{(proc.stderr or proc.stdout)[-3000:]}")
            for artifact in sorted((Path(tmp) / "out").iterdir()):
                if artifact.suffix in (".whl", ".gz"):
                    shutil.copy2(artifact, outdir / artifact.name)
                    out.append(f"{comp.path}: {outdir / artifact.name}")
    return out
