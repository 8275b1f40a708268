"""What a release needs from the built artifacts: checks that read wheels and sdists, nothing installed.

Used by the ``artifacts`` stage of ``scripts/test`` (``dev/tests/test_release_artifacts.py``), which
also installs the wheels and runs them. Every check compares with upstream: the pinned sdist, and
the wheel upstream's build makes of it, so that a difference the series did not make shows up.
"""

from __future__ import annotations

import configparser
import email.parser
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from series_tool.config import Component, Config
from series_tool.tree import BASELINE_TAG

# Left behind by tests, builds and editors; never in a release.
JUNK_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".tox", ".coverage", ".DS_Store"}
JUNK_SUFFIXES = (".pyc", ".pyo", ".orig", ".rej", ".swp")
# Upstream's provider sdists carry their folder's developer dotfiles (made by a VCS-aware sdist
# build); nothing builds, installs or runs with them, so their absence is a note, not a problem.
DEVELOPER_DOTFILES = {".gitignore", ".pre-commit-config.yaml"}


@dataclass
class Dist:
    """A wheel's or sdist's files (paths relative to its root), and the dist-info's."""

    path: Path
    files: dict[str, bytes]
    duplicates: list[str] = field(default_factory=list)

    @property
    def names(self) -> set[str]:
        return set(self.files)


def read_wheel(path: Path) -> Dist:
    with zipfile.ZipFile(path) as whl:
        return Dist(path, {n: whl.read(n) for n in whl.namelist() if not n.endswith("/")})


def read_sdist(path: Path) -> Dist:
    """Files of an sdist relative to its top folder; members listed twice are kept in ``duplicates``."""
    files: dict[str, bytes] = {}
    dups = []
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            rel = member.name.split("/", 1)[1] if "/" in member.name else member.name
            if rel in files:
                dups.append(rel)
            files[rel] = tar.extractfile(member).read()
    return Dist(path, files, dups)


def dist_info(name: str) -> str | None:
    """``RECORD`` for ``foo-1.0.dist-info/RECORD``; None outside the dist-info."""
    first, _, rest = name.partition("/")
    return rest if first.endswith(".dist-info") else None


def package_files(wheel: Dist) -> set[str]:
    return {n for n in wheel.names if dist_info(n) is None}


def metadata(wheel: Dist) -> email.message.Message:
    (name,) = [n for n in wheel.names if dist_info(n) == "METADATA"]
    return email.parser.BytesParser().parsebytes(wheel.files[name])


def entry_points(wheel: Dist) -> dict[str, dict[str, str]]:
    names = [n for n in wheel.names if dist_info(n) == "entry_points.txt"]
    if not names:
        return {}
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str
    parser.read_string(wheel.files[names[0]].decode())
    return {section: dict(parser[section]) for section in parser.sections()}


def modules(wheel: Dist) -> tuple[list[str], set[str]]:
    """The wheel's importable modules (sorted) and its regular packages."""
    mods, packages = [], set()
    for name in sorted(package_files(wheel)):
        if not name.endswith(".py"):
            continue
        mod = name[: -len(".py")].replace("/", ".")
        if mod.endswith(".__init__"):
            mod = mod[: -len(".__init__")]
            packages.add(mod)
        mods.append(mod)
    return mods, packages


# Modules whose import runs a program rather than defining one: the api-server's app module
# builds the whole application (the stage starts the api-server itself instead).
RUN_ON_IMPORT = {"airflow.api_fastapi.main"}


def not_importable_by_design(module: str) -> bool:
    """Scripts that run on import: ``__main__``, alembic's ``migrations.env``, :data:`RUN_ON_IMPORT`."""
    parts = module.split(".")
    return parts[-1] == "__main__" or parts[-2:] == ["migrations", "env"] or module in RUN_ON_IMPORT


def junk(names: set[str]) -> list[str]:
    return sorted(
        n
        for n in names
        if JUNK_PARTS & set(PurePosixPath(n).parts)
        or n.endswith(JUNK_SUFFIXES)
        or any(p.endswith(".egg-info") for p in PurePosixPath(n).parts)
    )


def tests_in(names: set[str]) -> list[str]:
    return sorted(
        n for n in names if "tests" in PurePosixPath(n).parts or PurePosixPath(n).name == "conftest.py"
    )


def patch_changes(cfg: Config, comp: Component) -> tuple[set[str], set[str]]:
    """Files the series adds and deletes in ``comp``, relative to its folder."""
    added, deleted, _ = series_changes(cfg, comp)
    return added, deleted


def series_changes(cfg: Config, comp: Component) -> tuple[set[str], set[str], set[str]]:
    """Files the series adds, deletes and modifies in ``comp``, relative to its folder."""
    out = subprocess.run(
        ["git", "-C", str(cfg.work_tree), "diff", "--name-status", "--no-renames", BASELINE_TAG, "HEAD"]
        + ["--", comp.path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    added, deleted, modified = set(), set(), set()
    for line in out.splitlines():
        status, path = line.split("\t", 1)
        rel = path[len(comp.path) + 1 :]
        {"A": added, "D": deleted}.get(status, modified).add(rel)
    return added, deleted, modified


@dataclass
class Report:
    """Problems fail the stage; notes are differences printed for a release manager to read."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _in_sdist(name: str, sdist_names: set[str]) -> str | None:
    """Where the sdist holds a wheel's package file (upstream's layouts put packages under src/)."""
    for candidate in (f"src/{name}", name):
        if candidate in sdist_names:
            return candidate
    return None


def sdist_covers_wheel(wheel: Dist, sdist: Dist) -> list[str]:
    """Every package file of the wheel is in the sdist with the same bytes (the wheel is built from it)."""
    problems = []
    for name in sorted(package_files(wheel)):
        where = _in_sdist(name, sdist.names)
        if where is None:
            problems.append(f"{name}: in the wheel, not in the sdist")
        elif sdist.files[where] != wheel.files[name]:
            problems.append(f"{name}: differs between the wheel and the sdist's {where}")
    return problems


def release_files(wheel: Dist, sdist: Dist) -> list[str]:
    """License and notice in both, metadata in the sdist, no junk, no tests in the wheel."""
    problems = []
    licenses = {PurePosixPath(n).name for n in wheel.names if (dist_info(n) or "").startswith("licenses/")}
    for needed in ("LICENSE", "NOTICE"):
        if needed not in licenses:
            problems.append(f"wheel: no {needed} in its dist-info/licenses/")
        if needed not in sdist.names:
            problems.append(f"sdist: no {needed}")
    for needed in ("PKG-INFO", "pyproject.toml"):
        if needed not in sdist.names:
            problems.append(f"sdist: no {needed}")
    problems += [f"wheel: junk file {n}" for n in junk(wheel.names)]
    problems += [f"sdist: junk file {n}" for n in junk(sdist.names)]
    problems += [f"wheel: test file {n}" for n in tests_in(package_files(wheel))]
    return problems


def compare_with_upstream(
    kind: str,
    ours: Dist,
    upstream: Dist,
    added: set[str],
    deleted: set[str],
    *,
    to_rel=lambda n: n,
    from_rel=lambda rel: rel,
) -> Report:
    """
    Files of ``ours`` against ``upstream``'s same artifact. ``added``/``deleted`` are the series'
    changes relative to the component folder; ``to_rel`` maps an artifact path to that folder and
    ``from_rel`` back (None: the artifact cannot hold it).
    A file upstream ships that ours lacks, and the series did not delete, is a problem; a file
    ours adds that the series did not add is a note.
    """
    report = Report()

    def key(name: str) -> str:
        info = dist_info(name)
        return f"<dist-info>/{info}" if info is not None else name

    ours_keys = {key(n): n for n in ours.names}
    up_keys = {key(n): n for n in upstream.names}
    for k in sorted(set(up_keys) - set(ours_keys)):
        if to_rel(k) in deleted:
            report.notes.append(f"{kind}: {k} removed by the series")
        elif k in DEVELOPER_DOTFILES:
            report.notes.append(f"{kind}: {k} (a developer dotfile) is not in ours, only in upstream's")
        else:
            report.problems.append(f"{kind}: {k} is missing (upstream's {kind} has it)")
    for k in sorted(set(ours_keys) - set(up_keys)):
        if to_rel(k) not in added:
            report.notes.append(f"{kind}: {k} is not in upstream's {kind} and no patch adds it")
    # A file the series adds must ship where upstream ships its neighbours (a new module, migration
    # or template); one the artifact would not hold anyway (a test in a core sdist) is left alone.
    up_dirs = {PurePosixPath(n).parent for n in upstream.names}
    for rel in sorted(added):
        name = from_rel(rel)
        if name is not None and name not in ours.names and PurePosixPath(name).parent in up_dirs:
            report.problems.append(f"{kind}: {name} is missing (the series adds it)")
    if upstream.duplicates and not ours.duplicates:
        report.notes.append(
            f"{kind}: upstream's lists {len(set(upstream.duplicates))} files twice "
            f"(e.g. {min(upstream.duplicates)}); ours lists each once"
        )
    for dup in sorted(set(ours.duplicates)):
        report.problems.append(f"{kind}: {dup} is listed twice")
    return report


def compare_wheel_metadata(ours: Dist, upstream: Dist) -> Report:
    """Entry points (a lost one fails) and declared dependencies (differences noted)."""
    report = Report()
    ours_ep, up_ep = entry_points(ours), entry_points(upstream)
    for group, items in sorted(up_ep.items()):
        for name, value in sorted(items.items()):
            got = ours_ep.get(group, {}).get(name)
            if got is None:
                report.problems.append(f"entry point [{group}] {name} = {value} is missing")
            elif got != value:
                report.notes.append(f"entry point [{group}] {name}: {value} -> {got}")
    for group, items in sorted(ours_ep.items()):
        for name in sorted(set(items) - set(up_ep.get(group, {}))):
            report.notes.append(f"entry point [{group}] {name} = {items[name]} is new")
    ours_req = set(metadata(ours).get_all("Requires-Dist") or [])
    up_req = set(metadata(upstream).get_all("Requires-Dist") or [])
    report.notes += [f"Requires-Dist dropped: {r}" for r in sorted(up_req - ours_req)]
    report.notes += [f"Requires-Dist added: {r}" for r in sorted(ours_req - up_req)]
    return report


def wheel_to_component(name: str) -> str:
    """A wheel path as a path in the component folder (for matching the series' changes)."""
    return f"src/{name}"


def component_to_wheel(rel: str) -> str | None:
    return rel[len("src/") :] if rel.startswith("src/") else None


def config_options(info: dict) -> set[tuple[str, str]]:
    """(section, option) pairs of a provider's ``get_provider_info()`` or ``provider.yaml``."""
    return {
        (section, option)
        for section, body in (info.get("config") or {}).items()
        for option in (body.get("options") or {})
    }
