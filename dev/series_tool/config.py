"""The pins and layout read from the repository's ``pyproject.toml``."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from series_tool.errors import SeriesError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Pin:
    """One upstream sdist: what to download and how to recognise it."""

    dist: str
    version: str
    sha256: str
    url: str

    @property
    def filename(self) -> str:
        return f"{self.dist.replace('-', '_')}-{self.version}.tar.gz"


@dataclass(frozen=True)
class Component:
    """An upstream distribution laid out at ``path`` in the work tree."""

    path: str
    pin: Pin

    @property
    def slug(self) -> str:
        return self.path.replace("/", "-")


@dataclass(frozen=True)
class Baseline:
    """A core baseline: which core and task SDK a virtualenv runs against."""

    name: str
    venv: str
    lock: str
    # Components not installed from the work tree, replaced by these pins.
    from_tree_except: tuple[str, ...] = ()
    pins: tuple[Pin, ...] = ()


@dataclass(frozen=True)
class Config:
    root: Path
    work_tree: Path
    components: tuple[Component, ...]
    baselines: dict[str, Baseline] = field(default_factory=dict)

    @property
    def pyproject(self) -> Path:
        return self.root / "pyproject.toml"

    def component(self, path: str) -> Component:
        path = path.strip("/")
        for comp in self.components:
            if comp.path == path:
                return comp
        known = ", ".join(c.path for c in self.components)
        raise SeriesError(f"unknown component {path!r} (known: {known})")

    def component_for_file(self, file: str) -> Component | None:
        """The component whose folder holds ``file`` (a path relative to the work tree)."""
        best: Component | None = None
        for comp in self.components:
            inside = file == comp.path or file.startswith(comp.path + "/")
            if inside and (best is None or len(comp.path) > len(best.path)):
                best = comp
        return best

    def patches_dir(self, comp: Component) -> Path:
        return self.root / comp.path / "patches"

    def patch_files(self, comp: Component) -> list[Path]:
        folder = self.patches_dir(comp)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix == ".patch")

    def baseline(self, name: str) -> Baseline:
        try:
            return self.baselines[name]
        except KeyError:
            known = ", ".join(sorted(self.baselines))
            raise SeriesError(f"unknown baseline {name!r} (known: {known})") from None

    def pins_fingerprint(self) -> str:
        """Changes whenever the baseline the series apply to changes."""
        data = [[c.path, c.pin.dist, c.pin.version, c.pin.sha256] for c in self.components]
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()

    def patches_fingerprint(self) -> str:
        """Changes whenever any patch file's bytes, name or place change."""
        digest = hashlib.sha256()
        for comp in self.components:
            for patch in self.patch_files(comp):
                digest.update(f"{comp.path}/{patch.name}\0".encode())
                digest.update(hashlib.sha256(patch.read_bytes()).digest())
        return digest.hexdigest()


def _pin(where: str, dist: str, data: dict) -> Pin:
    missing = [key for key in ("version", "sha256", "url") if not data.get(key)]
    if missing:
        raise SeriesError(f"pyproject.toml: {where} lacks {', '.join(missing)}")
    sha = str(data["sha256"]).lower()
    if not _SHA256.match(sha):
        raise SeriesError(f"pyproject.toml: {where} sha256 is not 64 hex digits: {data['sha256']!r}")
    return Pin(dist=dist, version=str(data["version"]), sha256=sha, url=str(data["url"]))


def load(root: Path) -> Config:
    """Read ``[tool.series]`` from ``root/pyproject.toml``; bad pins are a clear error."""
    pyproject = root / "pyproject.toml"
    try:
        data = tomllib.loads(pyproject.read_text())
    except FileNotFoundError:
        raise SeriesError(f"{pyproject} not found: run from the repository") from None
    except tomllib.TOMLDecodeError as exc:
        raise SeriesError(f"{pyproject}: {exc}") from None
    section = data.get("tool", {}).get("series")
    if not section:
        raise SeriesError(f"{pyproject} has no [tool.series] section")
    raw = section.get("components", {})
    order = section.get("order", list(raw))
    if sorted(order) != sorted(raw):
        raise SeriesError(
            "pyproject.toml: [tool.series] order must name every component once; "
            f"order={order}, components={sorted(raw)}"
        )
    components = []
    for path in order:
        spec = raw[path]
        if not spec.get("dist"):
            raise SeriesError(f"pyproject.toml: component {path!r} lacks dist")
        components.append(Component(path=path, pin=_pin(f"component {path!r}", spec["dist"], spec)))
    baselines = {}
    for name, spec in section.get("baselines", {}).items():
        pins = tuple(
            _pin(f"baseline {name!r} pin {dist!r}", dist, pin) for dist, pin in spec.get("pins", {}).items()
        )
        baselines[name] = Baseline(
            name=name,
            venv=spec.get("venv", f".venv-{name}"),
            lock=spec.get("lock", f"dev/lock/{name}.txt"),
            from_tree_except=tuple(spec.get("from-tree-except", ())),
            pins=pins,
        )
    return Config(
        root=root,
        work_tree=root / section.get("work-tree", "upstream"),
        components=tuple(components),
        baselines=baselines,
    )


def set_component_pin(pyproject: Path, comp_path: str, pin: Pin) -> None:
    """Rewrite one component's pin in place, keeping the file's comments and layout."""
    text = pyproject.read_text()
    header = f'[tool.series.components."{comp_path}"]'
    start = text.find(header)
    if start < 0:
        raise SeriesError(f"pyproject.toml has no {header} table")
    end = text.find("\n[", start + len(header))
    end = len(text) if end < 0 else end
    block = text[start:end]
    for key, value in (("version", pin.version), ("sha256", pin.sha256), ("url", pin.url)):
        block, count = re.subn(rf'(?m)^{key} = ".*"$', f'{key} = "{value}"', block)
        if count != 1:
            raise SeriesError(f"pyproject.toml: {header} must have exactly one {key} line")
    new_text = text[:start] + block + text[end:]
    tomllib.loads(new_text)  # never write a file that no longer parses
    pyproject.write_text(new_text)
