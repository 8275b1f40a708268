"""Tests of dev/series against small sdists of our own making, served by file: and loopback HTTP."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

REPO = Path(__file__).resolve().parents[2]
SERIES = REPO / "dev" / "series"

CORE_V1 = {
    "pyproject.toml": '[project]\nname = "fake-core"\nversion = "1.0"\n',
    "src/fake_core/__init__.py": '__version__ = "1.0"\n',
    "src/fake_core/jobs.py": "".join(f"line {i}\n" for i in range(1, 41)),
    "PKG-INFO": "Metadata-Version: 2.1\n",
}
PROVIDER_V1 = {
    "pyproject.toml": (
        '[build-system]\nrequires = ["flit_core>=3.9"]\nbuild-backend = "flit_core.buildapi"\n\n'
        '[project]\nname = "fake-provider"\nversion = "2.0"\ndescription = "x"\n\n'
        '[tool.flit.module]\nname = "fake_provider"\n'
    ),
    "src/fake_provider/__init__.py": '"""Fake."""\n\n__version__ = "2.0"\n',
    "src/fake_provider/executor.py": "".join(f"row {i}\n" for i in range(1, 31)),
}


def make_sdist(folder: Path, dist: str, version: str, files: dict[str, str]) -> tuple[Path, str]:
    name = f"{dist.replace('-', '_')}-{version}"
    path = folder / f"{name}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"{name}/{rel}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def write_pyproject(root: Path, pins: dict[str, tuple[str, str, str, Path]]) -> None:
    lines = ["[tool.series]", 'work-tree = "upstream"', f"order = {json.dumps(list(pins))}", ""]
    for comp, (dist, version, sha, path) in pins.items():
        lines += [
            f'[tool.series.components."{comp}"]',
            f'dist = "{dist}"',
            f'version = "{version}"',
            f'sha256 = "{sha}"',
            f'url = "{path.as_uri()}"',
            "",
        ]
    (root / "pyproject.toml").write_text("\n".join(lines))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A repository of ours with two components: airflow-core and providers/fake."""
    sdists = tmp_path / "sdists"
    sdists.mkdir()
    core, core_sha = make_sdist(sdists, "fake-core", "1.0", CORE_V1)
    prov, prov_sha = make_sdist(sdists, "fake-provider", "2.0", PROVIDER_V1)
    root = tmp_path / "repo"
    root.mkdir()
    write_pyproject(
        root,
        {
            "airflow-core": ("fake-core", "1.0", core_sha, core),
            "providers/fake": ("fake-provider", "2.0", prov_sha, prov),
        },
    )
    return root


def series(root: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SERIES_ROOT": str(root), "SERIES_CACHE": str(root / ".cache")}
    proc = subprocess.run([str(SERIES), *args], env=env, capture_output=True, text=True, check=False)
    if ok and proc.returncode != 0:
        raise AssertionError(
            f"dev/series {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    return proc


def tree_git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root / "upstream"), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def commit(root: Path, message: str, edits: dict[str, str]) -> None:
    for rel, text in edits.items():
        path = root / "upstream" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    tree_git(root, "add", "-A")
    tree_git(root, "commit", "-q", "-m", message)


TRAILERS = "\n\nBug: apache/airflow#62887\nForwarded: no\n"


def edit_line(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


# ----------------------------------------------------------------- materialize / export


def test_materialize_lays_out_upstream_layout_without_sdist_only_files(project: Path):
    out = series(project, "materialize").stdout
    assert "materialized" in out
    tree = project / "upstream"
    assert (tree / "airflow-core" / "src" / "fake_core" / "jobs.py").exists()
    assert (tree / "providers" / "fake" / "pyproject.toml").exists()
    assert not (tree / "airflow-core" / "PKG-INFO").exists()
    assert tree_git(project, "status", "--porcelain") == ""
    assert "Baseline" in tree_git(project, "log", "-1", "--format=%s")


def test_round_trip_edit_export_rematerialize_is_byte_stable(project: Path):
    series(project, "materialize")
    core = project / "upstream" / "airflow-core" / "src" / "fake_core" / "jobs.py"
    commit(
        project,
        "Core: change line 5" + TRAILERS,
        {str(core.relative_to(project / "upstream")): edit_line(core.read_text(), "line 5\n", "line five\n")},
    )
    prov = project / "upstream" / "providers" / "fake" / "src" / "fake_provider" / "executor.py"
    commit(
        project,
        "Provider: change row 7" + TRAILERS,
        {str(prov.relative_to(project / "upstream")): edit_line(prov.read_text(), "row 7\n", "row seven\n")},
    )

    out = series(project, "export").stdout
    assert "airflow-core: 1 written" in out
    core_patch = project / "airflow-core" / "patches" / "0001-Core-change-line-5.patch"
    prov_patch = project / "providers" / "fake" / "patches" / "0001-Provider-change-row-7.patch"
    assert core_patch.exists() and prov_patch.exists()
    text = core_patch.read_text()
    assert text.startswith("From 0000000000000000000000000000000000000000 ")
    assert "Subject: [PATCH] Core: change line 5" in text
    assert "+line five" in text and "Forwarded: no" in text

    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (core_patch, prov_patch)}
    assert "nothing to export" in series(project, "export").stdout
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before} == before

    # A tree made from scratch out of the patch files exports the very same bytes.
    subprocess.run(["rm", "-rf", str(project / "upstream")], check=True)
    series(project, "materialize")
    assert "line five" in core.read_text()
    assert "nothing to export" in series(project, "export").stdout
    assert {p: p.read_bytes() for p in before} == {p: b for p, (b, _) in before.items()}


def test_commands_twice_are_idempotent(project: Path):
    series(project, "materialize")
    assert "up to date" in series(project, "materialize").stdout
    assert "nothing to export" in series(project, "export").stdout
    assert "nothing to export" in series(project, "export").stdout
    assert "clean" in series(project, "status").stdout
    assert "clean" in series(project, "status", "--check").stdout


def test_export_keeps_numbering_per_component_and_removes_dropped_commits(project: Path):
    series(project, "materialize")
    jobs = "airflow-core/src/fake_core/jobs.py"
    base = (project / "upstream" / jobs).read_text()
    commit(project, "First" + TRAILERS, {jobs: edit_line(base, "line 2\n", "line two\n")})
    commit(
        project,
        "Second" + TRAILERS,
        {jobs: edit_line((project / "upstream" / jobs).read_text(), "line 30\n", "line thirty\n")},
    )
    series(project, "export")
    names = sorted(p.name for p in (project / "airflow-core" / "patches").iterdir())
    assert names == ["0001-First.patch", "0002-Second.patch"]
    tree_git(project, "reset", "-q", "--hard", "HEAD^")
    out = series(project, "export").stdout
    assert "removed 0002-Second.patch" in out
    assert sorted(p.name for p in (project / "airflow-core" / "patches").iterdir()) == ["0001-First.patch"]


def test_commit_touching_two_components_is_refused(project: Path):
    series(project, "materialize")
    commit(
        project,
        "Both" + TRAILERS,
        {
            "airflow-core/src/fake_core/new.py": "x = 1\n",
            "providers/fake/src/fake_provider/new.py": "y = 2\n",
        },
    )
    proc = series(project, "export", ok=False)
    assert proc.returncode == 2
    assert "touches 2 places" in proc.stderr
    assert "airflow-core: airflow-core/src/fake_core/new.py" in proc.stderr
    assert not (project / "airflow-core" / "patches").exists()


def test_commit_outside_every_component_is_refused(project: Path):
    series(project, "materialize")
    commit(project, "Root" + TRAILERS, {"README.md": "hello\n"})
    proc = series(project, "export", ok=False)
    assert "(no component): README.md" in proc.stderr


def test_status_reports_unexported_work_and_materialize_protects_it(project: Path):
    series(project, "materialize")
    jobs = project / "upstream" / "airflow-core" / "src" / "fake_core" / "jobs.py"
    jobs.write_text(edit_line(jobs.read_text(), "line 9\n", "line nine\n"))
    out = series(project, "status").stdout
    assert "uncommitted edits" in out and "jobs.py" in out
    assert series(project, "status", "--check", ok=False).returncode == 1

    tree_git(project, "commit", "-q", "-am", "Nine" + TRAILERS)
    assert "would write 0001-Nine.patch (new)" in series(project, "status").stdout
    proc = series(project, "materialize", ok=False)
    assert proc.returncode == 2 and "not exported: airflow-core/patches/0001-Nine.patch" in proc.stderr
    assert "line nine" in jobs.read_text()  # nothing was touched

    out = series(project, "materialize", "--force").stdout
    bundles = list((project / ".cache" / "backups").glob("*.bundle"))
    assert len(bundles) == 1 and "kept the old commits" in out
    assert "line nine" not in jobs.read_text()
    heads = subprocess.run(
        ["git", "bundle", "list-heads", str(bundles[0])], capture_output=True, text=True, check=True
    ).stdout
    assert heads.strip()


def test_untracked_build_junk_is_not_unexported_work(project: Path):
    series(project, "materialize")
    junk = project / "upstream" / "airflow-core" / "src" / "fake_core" / "__pycache__"
    junk.mkdir()
    (junk / "jobs.cpython-311.pyc").write_bytes(b"\0")
    assert series(project, "status", "--check").returncode == 0


# ------------------------------------------------------------------------ bad inputs


def test_bad_checksum_is_a_clear_error_and_nothing_is_unpacked(project: Path):
    text = (project / "pyproject.toml").read_text()
    sha = text.split('sha256 = "')[1][:64]
    (project / "pyproject.toml").write_text(text.replace(sha, "0" * 64, 1))
    proc = series(project, "materialize", ok=False)
    assert proc.returncode == 2
    assert "checksum mismatch for fake-core 1.0" in proc.stderr
    assert "Nothing was unpacked" in proc.stderr
    assert not (project / "upstream").exists()
    assert not list((project / ".cache").glob("*.tar.gz"))
    assert not list((project / ".cache").glob("*.part"))


def test_corrupt_cache_entry_is_downloaded_again(project: Path):
    series(project, "materialize")
    cached = project / ".cache" / "fake_core-1.0.tar.gz"
    cached.write_bytes(b"garbage")
    subprocess.run(["rm", "-rf", str(project / "upstream")], check=True)
    series(project, "materialize")
    assert tarfile.is_tarfile(cached)


def test_malformed_pins_are_reported(project: Path):
    text = (project / "pyproject.toml").read_text()
    sha = text.split('sha256 = "')[1][:64]
    (project / "pyproject.toml").write_text(text.replace(sha, "abc", 1))
    proc = series(project, "status", ok=False)
    assert "sha256 is not 64 hex digits" in proc.stderr


def _three_patches(project: Path) -> list[Path]:
    series(project, "materialize")
    jobs = "airflow-core/src/fake_core/jobs.py"
    for n in (3, 20, 35):
        text = (project / "upstream" / jobs).read_text()
        commit(project, f"Change {n}" + TRAILERS, {jobs: edit_line(text, f"line {n}\n", f"line {n}!\n")})
    series(project, "export")
    return sorted((project / "airflow-core" / "patches").iterdir())


def test_patch_that_does_not_apply_names_patch_file_and_hunk(project: Path):
    patches = _three_patches(project)
    broken = patches[1]
    broken.write_text(broken.read_text().replace(" line 19\n", " line nineteen\n"))
    subprocess.run(["rm", "-rf", str(project / "upstream")], check=True)

    proc = series(project, "materialize", ok=False)
    assert proc.returncode == 2
    assert "airflow-core/patches/0002-Change-20.patch does not apply" in proc.stderr
    assert "failing hunk: airflow-core/src/fake_core/jobs.py @@ -17,7 +17,7 @@" in proc.stderr
    # The tree stays at the last patch that applied, with no am session left behind.
    assert tree_git(project, "log", "-1", "--format=%s") == "Change 3"
    assert not (project / "upstream" / ".git" / "rebase-apply").exists()
    assert "applied only partly" in series(project, "status").stdout
    # Exporting now would drop patches 2 and 3: refused.
    proc = series(project, "export", ok=False)
    assert "would drop the patches after it" in proc.stderr
    assert len(list((project / "airflow-core" / "patches").iterdir())) == 3
    # And check, what CI runs, fails naming the patch too.
    proc = series(project, "check", ok=False)
    assert proc.returncode == 1 and "0002-Change-20.patch does not apply" in proc.stdout


def test_check_requires_trailers(project: Path):
    series(project, "materialize")
    jobs = "airflow-core/src/fake_core/jobs.py"
    commit(
        project,
        "No trailers\n\nJust a body.",
        {jobs: edit_line((project / "upstream" / jobs).read_text(), "line 1\n", "line one\n")},
    )
    out = series(project, "export").stdout
    assert "lacks the trailer(s) Bug, Forwarded" in out
    proc = series(project, "check", ok=False)
    assert "0001-No-trailers.patch: the commit message lacks the trailer(s) Bug:, Forwarded:" in proc.stdout
    tree_git(project, "commit", "-q", "--amend", "-m", "With trailers" + TRAILERS)
    series(project, "export")
    assert "series OK" in series(project, "check").stdout
    assert "series OK" in series(project, "check").stdout


# -------------------------------------------------------------------------- upstream


def test_upstream_makes_stacked_branches_without_touching_the_checkout(project: Path, tmp_path: Path):
    _three_patches(project)
    checkout = tmp_path / "airflow"
    subprocess.run(["git", "clone", "-q", str(project / "upstream"), str(checkout)], check=True)
    subprocess.run(
        ["git", "-C", str(checkout), "checkout", "-q", "-b", "main-up", "series-baseline"], check=True
    )
    out = series(project, "upstream", str(checkout), "--base", "main-up").stdout.splitlines()
    assert [line.split()[0] for line in out] == ["created"] * 3
    assert "series/airflow-core/0002-Change-20  (on series/airflow-core/0001-Change-3)" in out[1]

    def log(ref: str) -> list[str]:
        return subprocess.run(
            ["git", "-C", str(checkout), "log", "--format=%s", ref],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")[:3]

    assert log("series/airflow-core/0003-Change-35") == ["Change 35", "Change 20", "Change 3"]
    assert (
        subprocess.run(
            ["git", "-C", str(checkout), "status", "--porcelain"], capture_output=True, text=True, check=True
        ).stdout
        == ""
    )
    again = series(project, "upstream", str(checkout), "--base", "main-up").stdout
    assert again.count("unchanged") == 3
    worktrees = subprocess.run(
        ["git", "-C", str(checkout), "worktree", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert len(worktrees.strip().splitlines()) == 1


def test_upstream_reports_a_patch_that_does_not_apply(project: Path, tmp_path: Path):
    _three_patches(project)
    checkout = tmp_path / "airflow"
    subprocess.run(["git", "clone", "-q", str(project / "upstream"), str(checkout)], check=True)
    git = ["git", "-C", str(checkout), "-c", "user.name=u", "-c", "user.email=u@x"]
    subprocess.run([*git, "checkout", "-q", "-b", "moved", "series-baseline"], check=True)
    jobs = checkout / "airflow-core" / "src" / "fake_core" / "jobs.py"
    jobs.write_text(jobs.read_text().replace("line 20\n", "line twenty upstream\n"))
    subprocess.run([*git, "commit", "-q", "-am", "upstream moved on"], check=True)
    proc = series(project, "upstream", str(checkout), "--base", "moved", ok=False)
    assert "0002-Change-20.patch does not apply" in proc.stderr


# ---------------------------------------------------------------------------- rebase


class _Index(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, dict]] = {}

    def do_GET(self):
        body = json.dumps(self.files.get(self.path.strip("/"), {"files": []})).encode()
        self.send_response(200 if self.path.strip("/") in self.files else 404)
        self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def index(tmp_path: Path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _publish(index, tmp_path: Path, dist: str, version: str, files: dict[str, str]) -> None:
    path, sha = make_sdist(tmp_path / "sdists", dist, version, files)
    _Index.files[dist] = {"files": [{"filename": path.name, "url": path.as_uri(), "hashes": {"sha256": sha}}]}


def _series_with_index(project: Path, index, *args: str, ok: bool = True):
    os.environ["SERIES_INDEX_URL"] = f"http://127.0.0.1:{index.server_address[1]}/"
    try:
        return series(project, *args, ok=ok)
    finally:
        del os.environ["SERIES_INDEX_URL"]


def test_rebase_reapplies_with_three_way_merge(project: Path, tmp_path: Path, index):
    _three_patches(project)
    v2 = dict(CORE_V1)
    # Upstream inserted lines at the top: the patches' line numbers are off, 3-way copes.
    v2["src/fake_core/jobs.py"] = "header\n" * 5 + CORE_V1["src/fake_core/jobs.py"]
    _publish(index, tmp_path, "fake-core", "1.1", v2)
    out = _series_with_index(project, index, "rebase", "airflow-core", "1.1").stdout
    assert "now on 1.1" in out
    assert 'version = "1.1"' in (project / "pyproject.toml").read_text()
    jobs = (project / "upstream" / "airflow-core" / "src" / "fake_core" / "jobs.py").read_text()
    assert jobs.startswith("header\n") and "line 35!" in jobs
    assert "@@ -22,7 +22,7 @@" in (project / "airflow-core" / "patches" / "0002-Change-20.patch").read_text()
    # The moved pins make a tree from scratch that exports the same bytes.
    subprocess.run(["rm", "-rf", str(project / "upstream")], check=True)
    series(project, "materialize")
    assert "nothing to export" in series(project, "export").stdout


def test_rebase_conflict_is_reported_and_continues(project: Path, tmp_path: Path, index):
    _three_patches(project)
    v2 = dict(CORE_V1)
    v2["src/fake_core/jobs.py"] = CORE_V1["src/fake_core/jobs.py"].replace(
        "line 20\n", "line 20 (upstream)\n"
    )
    _publish(index, tmp_path, "fake-core", "1.1", v2)
    proc = _series_with_index(project, index, "rebase", "airflow-core", "1.1", ok=False)
    assert proc.returncode == 2
    assert "conflict while re-applying 'Change 20'" in proc.stderr
    assert "conflicted: airflow-core/src/fake_core/jobs.py" in proc.stderr
    jobs = project / "upstream" / "airflow-core" / "src" / "fake_core" / "jobs.py"
    text = jobs.read_text()
    start, end = text.index("<<<<<<<"), text.index(">>>>>>>")
    end = text.index("\n", end) + 1
    jobs.write_text(text[:start] + "line 20 (upstream)!\n" + text[end:])
    tree_git(project, "add", "airflow-core/src/fake_core/jobs.py")
    out = series(project, "rebase", "--continue").stdout
    assert "now on 1.1" in out
    assert "line 35!" in jobs.read_text()
    assert (
        "+line 20 (upstream)!" in (project / "airflow-core" / "patches" / "0002-Change-20.patch").read_text()
    )
    assert "clean" in series(project, "status").stdout


def test_rebase_to_a_missing_version_changes_nothing(project: Path, tmp_path: Path, index):
    _three_patches(project)
    before = (project / "pyproject.toml").read_text()
    _Index.files.pop("fake-core", None)
    proc = _series_with_index(project, index, "rebase", "airflow-core", "9.9", ok=False)
    assert proc.returncode == 2 and "fake-core" in proc.stderr
    assert (project / "pyproject.toml").read_text() == before
    assert "clean" in series(project, "status").stdout


# ----------------------------------------------------------------------------- build


@pytest.mark.slow
def test_build_labels_the_patched_component(project: Path):
    series(project, "materialize")
    mod = "providers/fake/src/fake_provider/executor.py"
    commit(
        project,
        "Provider fix" + TRAILERS,
        {mod: edit_line((project / "upstream" / mod).read_text(), "row 1\n", "row one\n")},
    )
    series(project, "export")
    out = series(project, "build", "--outdir", str(project / "dist")).stdout
    wheels = list((project / "dist").glob("*.whl"))
    assert len(wheels) == 1 and "fake_provider-2.0+series1." in wheels[0].name, out
    assert list((project / "dist").glob("fake_provider-2.0+series1.*.tar.gz"))
    with zipfile.ZipFile(wheels[0]) as whl:
        assert "row one" in whl.read("fake_provider/executor.py").decode()
        assert '__version__ = "2.0+series1.' in whl.read("fake_provider/__init__.py").decode()
    # Twice: the same artifacts again, nothing else in dist/.
    series(project, "build", "--outdir", str(project / "dist"))
    names = sorted(p.name for p in (project / "dist").iterdir())
    assert len(names) == 4 and {"SHA256SUMS", "series-build.json"} <= set(names), names
    # The tree itself keeps upstream's version.
    assert 'version = "2.0"' in (project / "upstream" / "providers/fake/pyproject.toml").read_text()
    proc = series(project, "build", "--label", "Bad Label", ok=False)
    assert "local version label" in proc.stderr


# A task SDK that, like upstream's, force-includes a library from the monorepo's shared/ folder
# next to it into its sdist; the pinned sdist holds that library at the destination.
SDK_V1 = {
    "pyproject.toml": (
        '[build-system]\nrequires = ["hatchling==1.32.4"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "fake-sdk"\nversion = "3.0"\n\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["src/fake_sdk"]\n\n'
        "[tool.hatch.build.targets.sdist.force-include]\n"
        '"../shared/util/src/fake_shared/util" = "src/fake_sdk/_shared/util"\n'
    ),
    "src/fake_sdk/__init__.py": '__version__ = "3.0"\n',
    "src/fake_sdk/_shared/__init__.py": "",
    "src/fake_sdk/_shared/util/__init__.py": "ANSWER = 41\n",
}


@pytest.fixture
def shared_project(tmp_path: Path) -> Path:
    """A repository of ours whose one component needs files from outside its folder to build."""
    sdists = tmp_path / "sdists"
    sdists.mkdir()
    sdk, sdk_sha = make_sdist(sdists, "fake-sdk", "3.0", SDK_V1)
    root = tmp_path / "repo"
    root.mkdir()
    write_pyproject(root, {"task-sdk": ("fake-sdk", "3.0", sdk_sha, sdk)})
    series(root, "materialize")
    return root


@pytest.mark.slow
def test_build_provides_the_shared_folder_a_component_force_includes(shared_project: Path):
    mod = "task-sdk/src/fake_sdk/_shared/util/__init__.py"
    commit(shared_project, "Shared fix" + TRAILERS, {mod: "ANSWER = 42\n"})
    series(shared_project, "export")
    dist = shared_project / "dist"
    out = series(shared_project, "build", "--outdir", str(dist)).stdout
    (wheel,) = dist.glob("fake_sdk-3.0+series1.*.whl")
    (sdist,) = dist.glob("fake_sdk-3.0+series1.*.tar.gz")
    with zipfile.ZipFile(wheel) as whl:
        assert whl.read("fake_sdk/_shared/util/__init__.py") == b"ANSWER = 42\n"
    with tarfile.open(sdist) as tar:
        shared = [m.name for m in tar.getmembers() if m.name.endswith("_shared/util/__init__.py")]
    assert shared == [f"{sdist.name[: -len('.tar.gz')]}/src/fake_sdk/_shared/util/__init__.py"], shared
    # Checksums printed and written where sha256sum -c finds them.
    for artifact in (wheel, sdist):
        digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
        assert f"{artifact}  sha256 {digest}" in out, out
        assert f"{digest}  {artifact.name}" in (dist / "SHA256SUMS").read_text()
    manifest = json.loads((dist / "series-build.json").read_text())["components"]["task-sdk"]
    assert manifest["artifacts"]["wheel"]["file"] == wheel.name
    assert manifest["patches"] == ["0001-Shared-fix.patch"]


def test_build_failure_names_the_component_and_the_cause(shared_project: Path):
    # The component's copy of the shared library is gone: nothing can stand in for ../shared/.
    tree_git(shared_project, "rm", "-q", "-r", "task-sdk/src/fake_sdk/_shared/util")
    tree_git(shared_project, "commit", "-q", "-m", "Drop the copy" + TRAILERS)
    series(shared_project, "export")
    proc = series(shared_project, "build", ok=False)
    assert proc.returncode == 2
    assert "building task-sdk failed" in proc.stderr, proc.stderr
    assert "../shared/util/src/fake_shared/util" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_build_backend_failure_is_reported_with_its_cause(shared_project: Path):
    pyproject = "task-sdk/pyproject.toml"
    text = (shared_project / "upstream" / pyproject).read_text() + '"NOTICE" = "NOTICE"\n'
    commit(shared_project, "Ship a notice" + TRAILERS, {pyproject: text})
    series(shared_project, "export")
    proc = series(shared_project, "build", ok=False)
    first = proc.stderr.splitlines()[0]
    assert first.startswith("dev/series build: error: building task-sdk (fake-sdk 3.0+series1."), first
    assert "failed: FileNotFoundError: Forced include not found: " in first, first
    assert first.endswith("/task-sdk/NOTICE"), first


def test_cli_help_lists_every_command():
    out = subprocess.run([str(SERIES), "--help"], capture_output=True, text=True, check=True).stdout
    for name in ("materialize", "export", "status", "check", "env", "lock", "rebase", "upstream", "build"):
        assert name in out


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


# ------------------------------------------------------------------------------ lint


def test_lint_reports_only_findings_the_series_adds(project: Path):
    (project / "dev" / "lint").mkdir(parents=True)
    (project / "dev" / "lint" / "ruff-upstream.toml").write_text(
        (REPO / "dev" / "lint" / "ruff-upstream.toml").read_text()
    )
    series(project, "materialize")
    # The baseline file already breaks the rules (no __future__ import): not ours to fix.
    assert "lint OK" in series(project, "lint").stdout
    mod = "providers/fake/src/fake_provider/executor.py"
    commit(project, "Clean change" + TRAILERS, {"providers/fake/src/fake_provider/clean.py": CLEAN_MODULE})
    assert "lint OK" in series(project, "lint").stdout
    commit(project, "Messy change" + TRAILERS, {mod: "import os\nx=1\n"})
    proc = series(project, "lint", ok=False)
    assert proc.returncode == 1
    assert f"{mod}: F401" in proc.stdout
    assert f"{mod}: not formatted" in proc.stdout
    assert "clean.py" not in proc.stdout


CLEAN_MODULE = '''\
"""A module that follows upstream's rules."""

from __future__ import annotations


def answer() -> int:
    """Return the answer."""
    return 42
'''


# ------------------------------------------------------------------------------- env


@pytest.mark.slow
def test_env_installs_the_tree_editable_and_is_idempotent(project: Path):
    text = (project / "pyproject.toml").read_text()
    core_block = text[text.index('[tool.series.components."airflow-core"]') :]
    core_block = core_block[: core_block.index("\n\n")]
    # fake-core has no build backend of its own; give it flit's, like the provider.
    text = text.replace('order = ["airflow-core", "providers/fake"]', 'order = ["providers/fake"]')
    text = text.replace(core_block, "")
    text += '\n[tool.series.baselines.main]\nvenv = ".venv"\nlock = "dev/lock/main.txt"\n'
    (project / "pyproject.toml").write_text(text)
    (project / "dev" / "requirements").mkdir(parents=True)
    (project / "dev" / "requirements" / "test.in").write_text("# nothing beyond the tree\n")
    series(project, "materialize")
    assert "installed" in series(project, "env").stdout
    python = project / ".venv" / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import fake_provider; print(fake_provider.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(project / "upstream" / "providers" / "fake") in where
    assert "up to date" in series(project, "env").stdout
    # A new lock is an input change: the venv is brought in line again.
    series(project, "lock")
    assert (project / "dev" / "lock" / "main.txt").exists()
    assert "installed" in series(project, "env").stdout
    assert "up to date" in series(project, "env").stdout


def test_env_refuses_a_missing_tree(project: Path):
    proc = series(project, "env", "--baseline", "nope", ok=False)
    assert "unknown baseline 'nope'" in proc.stderr


def test_list_shows_each_patch_with_its_trailers(project: Path):
    patches = _three_patches(project)
    text = (
        patches[0].read_text().replace("Forwarded: no", "Forwarded: https://github.com/apache/airflow/pull/1")
    )
    patches[0].write_text(text.replace("Forwarded:", "Applied-Upstream: 3.4.1\nForwarded:", 1))
    out = series(project, "list").stdout
    assert "airflow-core (fake-core 1.0): 3 patches" in out
    assert "bug: apache/airflow#62887; applied upstream in 3.4.1" in out
    assert out.count("forwarded: no") == 2


# ------------------------------------------------------------- release artifact checks


def _dist(files: dict[str, str], dups: list[str] | None = None):
    from series_tool.artifacts import Dist

    return Dist(Path("x"), {k: v.encode() for k, v in files.items()}, dups or [])


WHEEL = {
    "fake/__init__.py": "",
    "fake/migrations/versions/0001_add.py": "revision = 'a'\n",
    "fake-1.0.dist-info/METADATA": "Metadata-Version: 2.4\nName: fake\nVersion: 1.0\nRequires-Dist: dep>=1\n",
    "fake-1.0.dist-info/entry_points.txt": "[apache_airflow_provider]\nprovider_info = fake.get:info\n",
    "fake-1.0.dist-info/licenses/LICENSE": "L",
    "fake-1.0.dist-info/licenses/NOTICE": "N",
}
SDIST = {
    "PKG-INFO": "",
    "pyproject.toml": "",
    "LICENSE": "L",
    "NOTICE": "N",
    "src/fake/__init__.py": "",
    "src/fake/migrations/versions/0001_add.py": "revision = 'a'\n",
}


def test_artifact_checks_fail_on_a_file_upstream_ships_and_ours_lacks():
    from series_tool.artifacts import compare_with_upstream, component_to_wheel, wheel_to_component

    ours = {k: v for k, v in WHEEL.items() if "migrations" not in k}
    report = compare_with_upstream(
        "wheel", _dist(ours), _dist(WHEEL), set(), set(), to_rel=wheel_to_component
    )
    assert report.problems == [
        "wheel: fake/migrations/versions/0001_add.py is missing (upstream's wheel has it)"
    ]
    # Deleted by the series: a note, not a problem; a file no patch adds: a note.
    deleted = {"src/fake/migrations/versions/0001_add.py"}
    extra = {**ours, "fake/stray.py": ""}
    report = compare_with_upstream(
        "wheel", _dist(extra), _dist(WHEEL), set(), deleted, to_rel=wheel_to_component
    )
    assert not report.problems
    assert "wheel: fake/stray.py is not in upstream's wheel and no patch adds it" in report.notes
    # A file the series adds must ship next to its upstream neighbours; a test need not.
    added = {"src/fake/migrations/versions/0002_more.py", "tests/test_more.py"}
    report = compare_with_upstream(
        "wheel",
        _dist(WHEEL),
        _dist(WHEEL),
        added,
        set(),
        to_rel=wheel_to_component,
        from_rel=component_to_wheel,
    )
    assert report.problems == ["wheel: fake/migrations/versions/0002_more.py is missing (the series adds it)"]
    # The dist-info's own name carries the version: compared by what is inside it.
    renamed = {k.replace("fake-1.0.dist-info", "fake-1.0+series1.ab.dist-info"): v for k, v in WHEEL.items()}
    assert not compare_with_upstream("wheel", _dist(renamed), _dist(WHEEL), set(), set()).problems


def test_artifact_checks_sdist_must_hold_every_wheel_file_with_its_bytes():
    from series_tool.artifacts import sdist_covers_wheel

    assert sdist_covers_wheel(_dist(WHEEL), _dist(SDIST)) == []
    lacking = {k: v for k, v in SDIST.items() if "migrations" not in k}
    changed = {**SDIST, "src/fake/__init__.py": "x = 1\n"}
    assert sdist_covers_wheel(_dist(WHEEL), _dist(lacking)) == [
        "fake/migrations/versions/0001_add.py: in the wheel, not in the sdist"
    ]
    assert sdist_covers_wheel(_dist(WHEEL), _dist(changed)) == [
        "fake/__init__.py: differs between the wheel and the sdist's src/fake/__init__.py"
    ]


def test_artifact_checks_release_files_licenses_junk_and_tests():
    from series_tool.artifacts import release_files

    assert release_files(_dist(WHEEL), _dist(SDIST)) == []
    wheel = {k: v for k, v in WHEEL.items() if not k.endswith("NOTICE")}
    wheel |= {"fake/__pycache__/x.cpython-311.pyc": "", "fake/tests/test_x.py": ""}
    sdist = {k: v for k, v in SDIST.items() if k != "LICENSE"} | {"src/fake/x.py.orig": ""}
    assert release_files(_dist(wheel), _dist(sdist)) == [
        "sdist: no LICENSE",
        "wheel: no NOTICE in its dist-info/licenses/",
        "wheel: junk file fake/__pycache__/x.cpython-311.pyc",
        "sdist: junk file src/fake/x.py.orig",
        "wheel: test file fake/tests/test_x.py",
    ]


def test_artifact_checks_entry_points_and_dependencies():
    from series_tool.artifacts import compare_wheel_metadata

    ours = {**WHEEL, "fake-1.0.dist-info/entry_points.txt": "[console_scripts]\nfake = fake:main\n"}
    ours["fake-1.0.dist-info/METADATA"] += "Requires-Dist: other\n"
    report = compare_wheel_metadata(_dist(ours), _dist(WHEEL))
    assert report.problems == [
        "entry point [apache_airflow_provider] provider_info = fake.get:info is missing"
    ]
    assert report.notes == [
        "entry point [console_scripts] fake = fake:main is new",
        "Requires-Dist added: other",
    ]


def test_import_check_tells_our_missing_files_from_optional_dependencies():
    sys.path.insert(0, str(REPO / "dev" / "series_tool"))
    try:
        import import_modules as im
    finally:
        sys.path.pop(0)
    own = {"airflow.models", "airflow.providers.fake", "airflow.providers.fake.hooks", "airflow.sdk"}

    def missing(name: str) -> str:
        exc = ModuleNotFoundError(f"No module named {name!r}", name=name)
        return im.classify("m", exc, own)[0]

    assert missing("airflow.models.gone") == "failed"  # a file of our core wheel
    assert missing("airflow.providers.fake.hooks.gone") == "failed"
    assert missing("airflow.sdk.gone") == "failed"
    assert missing("airflow.gone") == "failed"  # core owns airflow.<module>
    assert missing("airflow.providers.google") == "optional"  # another provider
    assert missing("boto3") == "optional"
    cannot = ImportError("cannot import name 'x' from 'airflow.models.dag'", name="airflow.models.dag")
    assert im.classify("m", cannot, own)[0] == "failed"
    assert im.classify("m", RuntimeError("boom"), own)[0] == "failed"
