"""`dev/series build`: wheels and sdists of the patched components, with a local version label.

Each component is built the way upstream releases it: its folder, as committed in the work tree
(baseline plus the series, nothing the tests or editable installs left behind), is laid out at its
place in a throwaway copy of upstream's monorepo, the sdist is built from that folder and the wheel
from the sdist. Upstream's core and task SDK force-include the ``shared/`` libraries that sit next
to them in the monorepo (``../shared/<lib>/src/airflow_shared/<lib>``) into their sdists at
``src/airflow/[sdk/]_shared/<lib>``. The pinned sdists already hold those files at that
destination, and that copy is the one the series patches, so the build puts it back where the
pyproject reads it from.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from series_tool import git, tree
from series_tool.config import Component, Config
from series_tool.errors import SeriesError

_LABEL = re.compile(r"^[a-z0-9]+(\.[a-z0-9]+)*$")
SUMS = "SHA256SUMS"
MANIFEST = "series-build.json"


@dataclass(frozen=True)
class Artifact:
    component: str
    path: Path
    sha256: str

    @property
    def kind(self) -> str:
        return "wheel" if self.path.suffix == ".whl" else "sdist"


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


def force_includes(pyproject: dict) -> list[tuple[str, str]]:
    """Every ``force-include`` (source, destination) of the hatch build config, any target."""
    build = pyproject.get("tool", {}).get("hatch", {}).get("build", {})
    tables = [build.get("force-include", {})]
    tables += [t.get("force-include", {}) for t in build.get("targets", {}).values() if isinstance(t, dict)]
    return [(str(src), str(dst)) for table in tables for src, dst in table.items()]


def provide_outside_files(comp: Component, monorepo: Path) -> list[str]:
    """
    Put what ``comp``'s build reads from outside its folder where the build looks for it.

    ``monorepo`` holds the component at ``monorepo/<comp.path>``. A force-included source outside
    the component's folder is taken from the component's own copy at the destination (which is
    moved, so the sdist holds it once). Returns one line per source provided.
    """
    folder = monorepo / comp.path
    try:
        data = tomllib.loads((folder / "pyproject.toml").read_text())
    except (FileNotFoundError, tomllib.TOMLDecodeError) as exc:
        raise SeriesError(f"building {comp.path} failed: cannot read its pyproject.toml: {exc}") from None
    provided = []
    root = monorepo.resolve()
    for src, dst in force_includes(data):
        source = (folder / src).resolve()
        if source.is_relative_to(folder.resolve()):
            continue  # inside the component: the component's own business, as upstream
        if not source.is_relative_to(root):
            raise SeriesError(
                f"building {comp.path} failed: its pyproject.toml force-includes {src!r}, "
                "which lies outside upstream's monorepo"
            )
        if source.exists():
            continue
        dest = PurePosixPath(dst)
        if dest.is_absolute() or ".." in dest.parts:
            raise SeriesError(
                f"building {comp.path} failed: force-include destination {dst!r} is not a relative path"
            )
        copy = folder / dest
        if not copy.exists():
            raise SeriesError(
                f"building {comp.path} failed: its pyproject.toml force-includes {src!r} from outside "
                f"its folder (upstream's monorepo), and the component has no copy of it at {dst!r} "
                "to stand in for it"
            )
        source.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(copy, source)
        provided.append(f"{src} <- {dst}")
    return provided


def _export_component(cfg: Config, comp: Component, monorepo: Path) -> None:
    """The component's folder as committed at the work tree's HEAD (no build or test leftovers)."""
    blob = subprocess.run(
        ["git", "-C", str(cfg.work_tree), "archive", "--format=tar", "HEAD", "--", comp.path],
        capture_output=True,
        check=False,
    )
    if blob.returncode != 0:
        raise SeriesError(f"building {comp.path} failed: git archive: {blob.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(blob.stdout)) as tar:
        tar.extractall(monorepo, filter="data")
    if not (monorepo / comp.path / "pyproject.toml").exists():
        raise SeriesError(f"building {comp.path} failed: the work tree has no {comp.path}/pyproject.toml")


_CAUSE = re.compile(r"(?m)^(?:\w*Error|Exception|ValueError|OSError|FileNotFoundError)[\w.]*: .+$")


def failure_cause(log: str) -> str:
    """The line of a build log that says why it failed (the backend's last exception), or its last line."""
    causes = _CAUSE.findall(log)
    if causes:
        return causes[-1].strip()
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _dist_stem(comp: Component) -> str:
    return comp.pin.dist.replace("-", "_")


def build_one(cfg: Config, comp: Component, version: str, outdir: Path, uv: str) -> list[Artifact]:
    with tempfile.TemporaryDirectory(prefix="series-build-") as tmp:
        monorepo = Path(tmp) / "monorepo"
        monorepo.mkdir()
        _export_component(cfg, comp, monorepo)
        src = monorepo / comp.path
        provide_outside_files(comp, monorepo)
        set_version(src, comp.pin.version, version)
        built = Path(tmp) / "out"
        # No --sdist/--wheel: uv builds the sdist, then the wheel from that sdist, so a file the
        # sdist misses breaks the wheel here rather than for whoever installs from the sdist.
        proc = subprocess.run(
            [uv, "build", "--no-sources", "-o", str(built), str(src)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            log = proc.stderr + proc.stdout
            raise SeriesError(
                f"building {comp.path} ({comp.pin.dist} {version}) failed: {failure_cause(log)}\n"
                f"--- build log (end) ---\n{log.strip()[-3000:]}"
            )
        made = sorted(p for p in built.iterdir() if p.name.endswith((".whl", ".tar.gz")))
        if {p.suffix for p in made} != {".whl", ".gz"}:
            raise SeriesError(f"building {comp.path} failed: expected a wheel and an sdist, got {made}")
        # One build per component in outdir: drop the artifacts of an earlier label.
        for old in outdir.glob(f"{_dist_stem(comp)}-*"):
            if old.name.endswith((".whl", ".tar.gz")):
                old.unlink()
        out = []
        for artifact in made:
            target = outdir / artifact.name
            shutil.copy2(artifact, target)
            out.append(Artifact(comp.path, target, sha256_of(target)))
        return out


def _write_sums(outdir: Path) -> None:
    """``SHA256SUMS`` of every wheel and sdist in ``outdir`` (``sha256sum -c SHA256SUMS`` checks them)."""
    lines = [
        f"{sha256_of(p)}  {p.name}"
        for p in sorted(outdir.iterdir())
        if p.is_file() and p.name.endswith((".whl", ".tar.gz"))
    ]
    (outdir / SUMS).write_text("\n".join(lines) + "\n")


def _update_manifest(cfg: Config, outdir: Path, built: dict[Component, tuple[str, list[Artifact]]]) -> None:
    path = outdir / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        data = {}
    comps = data.setdefault("components", {})
    for comp, (version, artifacts) in built.items():
        comps[comp.path] = {
            "dist": comp.pin.dist,
            "upstream_version": comp.pin.version,
            "version": version,
            "patches": [p.name for p in cfg.patch_files(comp)],
            "work_tree_head": git.head(cfg.work_tree),
            "artifacts": {a.kind: {"file": a.path.name, "sha256": a.sha256} for a in artifacts},
        }
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


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
    built: dict[Component, tuple[str, list[Artifact]]] = {}
    try:
        for comp in comps:
            version = f"{comp.pin.version}+{label or default_label(cfg, comp)}"
            artifacts = build_one(cfg, comp, version, outdir, uv)
            built[comp] = (version, artifacts)
            out += [f"{comp.path}: {a.path}  sha256 {a.sha256}" for a in artifacts]
    finally:
        if built:
            _write_sums(outdir)
            _update_manifest(cfg, outdir, built)
    out.append(f"checksums: {outdir / SUMS} (check with: cd {outdir} && sha256sum -c {SUMS})")
    return out
