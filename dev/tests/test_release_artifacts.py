"""The release artifacts, installed and run: what `dev/series build` makes, not the work tree.

The ``artifacts`` stage of ``scripts/test`` runs this file (``-m artifacts``; the tooling and e2e
stages leave it out). It builds the wheels and sdists of every patched component (reused while the
tree, the pins and the build tool are unchanged), installs the wheels into a fresh virtualenv with
the pinned dependencies (``dev/lock/main.txt``), imports every module they ship, migrates a SQLite
database, runs a Deadline Alert callback on LocalExecutor, and checks the files a release needs
against upstream's own artifacts of the pinned versions. The providers' wheels are also installed on
the stable core (``dev/lock/stable.txt``, core 3.3.2) and imported.

Differences from upstream that no patch explains are printed (``-s`` shows them; the stage passes
it); a file upstream ships that ours lacks fails.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from series_tool import artifacts as art
from series_tool import build as build_mod
from series_tool import config, git, sdist

pytestmark = [pytest.mark.artifacts, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "artifacts"
IMPORTER = ROOT / "dev" / "series_tool" / "import_modules.py"
CFG = config.load(ROOT)
COMPONENTS = [c for c in CFG.components if CFG.patch_files(c) and c.path != "devel-common"]
PROVIDERS = [c for c in COMPONENTS if c.path.startswith("providers/")]


def _ids(comps):
    return [c.path for c in comps]


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd[:6]))} ... exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def _say(title: str, lines: list[str]) -> None:
    if lines:
        print(f"\n{title}:", *(f"  {line}" for line in lines), sep="\n", flush=True)


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def built() -> dict[str, dict[str, Path]]:
    """{component: {"wheel": path, "sdist": path}}, built once per tree, pins and build tool."""
    state_key = hashlib.sha256(
        "\0".join(
            [
                CFG.pins_fingerprint(),
                CFG.patches_fingerprint(),
                git.head(CFG.work_tree),
                hashlib.sha256(Path(build_mod.__file__).read_bytes()).hexdigest(),
            ]
        ).encode()
    ).hexdigest()[:16]
    outdir = CACHE / "dist" / state_key
    manifest = outdir / build_mod.MANIFEST

    def complete() -> dict[str, dict[str, Path]] | None:
        try:
            data = json.loads(manifest.read_text())["components"]
        except (FileNotFoundError, ValueError, KeyError):
            return None
        found = {}
        for comp in COMPONENTS:
            entry = data.get(comp.path, {}).get("artifacts", {})
            paths = {}
            for kind in ("wheel", "sdist"):
                path = outdir / entry.get(kind, {}).get("file", "-")
                if not path.exists() or build_mod.sha256_of(path) != entry[kind]["sha256"]:
                    return None
                paths[kind] = path
            found[comp.path] = paths
        return found

    found = complete()
    if found:
        print(f"\nreusing the artifacts built from this tree in {outdir}")
    else:
        shutil.rmtree(CACHE / "dist", ignore_errors=True)
        proc = subprocess.run(
            [str(ROOT / "dev" / "series"), "build", "--outdir", str(outdir)],
            capture_output=True,
            text=True,
            check=False,
        )
        print(proc.stdout, flush=True)
        if proc.returncode != 0:
            pytest.fail(f"dev/series build failed:\n{proc.stderr}")
        found = complete()
        assert found, f"dev/series build did not leave every component's artifacts in {outdir}"
    return found


@pytest.fixture(scope="session")
def upstream_wheels() -> dict[str, Path]:
    """Upstream's wheel of each pinned sdist, as its own build makes it (cached by the sdist's sha256)."""
    cache = sdist.cache_dir(ROOT)
    out = {}
    for comp in COMPONENTS:
        folder = CACHE / "upstream" / comp.pin.sha256[:16]
        wheels = list(folder.glob("*.whl"))
        if not wheels:
            shutil.rmtree(folder, ignore_errors=True)
            _run(["uv", "build", "-q", "--wheel", "-o", str(folder), str(sdist.fetch(comp.pin, cache))])
            wheels = list(folder.glob("*.whl"))
        out[comp.path] = wheels[0]
    return out


VENV_STAMP = ".artifacts-venv.json"


def _fresh_venv(name: str, lock: str, requirements: list[str]) -> str:
    """
    A virtualenv holding only ``requirements`` (files) within the pins of ``lock``; returns its python.

    Made anew whenever any input differs (the wheels' bytes, the lock); one made from the very same
    inputs by an earlier run is reused, unless ``ARTIFACTS_FRESH_VENVS=1``. The tests only import and
    run what it holds (Airflow's homes and databases live in temporary folders), so such a venv is
    the one a fresh install gives, with its bytecode already compiled.
    """
    venv = CACHE / name
    python = str(venv / "bin" / "python")
    digest = hashlib.sha256((ROOT / lock).read_bytes())
    for req in sorted(requirements):
        digest.update(Path(req).name.encode() + bytes.fromhex(build_mod.sha256_of(Path(req))))
    stamp = venv / VENV_STAMP
    fresh = os.environ.get("ARTIFACTS_FRESH_VENVS") == "1"
    if not fresh and stamp.exists() and json.loads(stamp.read_text()).get("digest") == digest.hexdigest():
        print(f"\nreusing {venv} (made from the same files)", flush=True)
        return python
    shutil.rmtree(venv, ignore_errors=True)
    _run(["uv", "venv", "-q", "--python", "3.11", str(venv)])
    _run(
        ["uv", "pip", "install", "-q", "--no-sources", "--python", python, "-c", str(ROOT / lock)]
        + requirements
    )
    stamp.write_text(json.dumps({"digest": digest.hexdigest()}) + "\n")
    return python


def _stable_core() -> list[str]:
    cache = sdist.cache_dir(ROOT)
    return [str(sdist.fetch(pin, cache)) for pin in CFG.baseline("stable").pins]


@pytest.fixture(scope="session")
def venv(built) -> str:
    """Patched core, task SDK and providers from their wheels, on the main lock."""
    return _fresh_venv("venv-main", "dev/lock/main.txt", [str(b["wheel"]) for b in built.values()])


@pytest.fixture(scope="session")
def upstream_venv(upstream_wheels) -> str:
    """The same, from upstream's wheels: tells upstream's own failures from ours."""
    return _fresh_venv("venv-main-upstream", "dev/lock/main.txt", [str(w) for w in upstream_wheels.values()])


@pytest.fixture(scope="session")
def stable_venv(built) -> str:
    """The patched providers' wheels on the stable core (unpatched 3.3.2 / task SDK 1.3.2)."""
    wheels = [str(built[c.path]["wheel"]) for c in PROVIDERS]
    return _fresh_venv("venv-stable", "dev/lock/stable.txt", [*_stable_core(), *wheels])


@pytest.fixture(scope="session")
def upstream_stable_venv(upstream_wheels) -> str:
    wheels = [str(upstream_wheels[c.path]) for c in PROVIDERS]
    return _fresh_venv("venv-stable-upstream", "dev/lock/stable.txt", [*_stable_core(), *wheels])


@pytest.fixture(scope="session")
def dists(built, upstream_wheels) -> dict[str, dict[str, art.Dist]]:
    cache = sdist.cache_dir(ROOT)
    return {
        comp.path: {
            "wheel": art.read_wheel(built[comp.path]["wheel"]),
            "sdist": art.read_sdist(built[comp.path]["sdist"]),
            "upstream_wheel": art.read_wheel(upstream_wheels[comp.path]),
            "upstream_sdist": art.read_sdist(sdist.fetch(comp.pin, cache)),
        }
        for comp in COMPONENTS
    }


def _airflow_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k != "PYTHONPATH"}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    return env


def _import_all(python: str, modules: list[str], own: set[str]) -> dict:
    """Import ``modules`` in ``python``, in two processes at once; the merged result."""
    half = len(modules) // 2
    chunks = [c for c in (modules[:half], modules[half:]) if c]
    with tempfile.TemporaryDirectory(prefix="artifacts-import-") as home:
        env = _airflow_env(Path(home))

        def one(chunk: list[str]) -> dict:
            proc = subprocess.run(
                [python, str(IMPORTER), json.dumps(sorted(own)), *chunk],
                capture_output=True,
                text=True,
                env=env,
                cwd=home,
                check=False,
            )
            lines = proc.stdout.strip().splitlines()
            if proc.returncode != 0 or not lines:
                pytest.fail(f"the import check itself failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            return json.loads(lines[-1])

        with concurrent.futures.ThreadPoolExecutor(len(chunks)) as pool:
            results = list(pool.map(one, chunks))
    merged = {"imported": 0, "optional": {}, "failed": {}}
    for r in results:
        merged["imported"] += r["imported"]
        merged["optional"].update(r["optional"])
        merged["failed"].update(r["failed"])
    return merged


def _touched_modules(comp) -> set[str]:
    """Modules of ``comp`` the series adds or changes."""
    added, _, modified = art.series_changes(CFG, comp)
    return {
        rel[len("src/") : -len(".py")].replace("/", ".").removesuffix(".__init__")
        for rel in added | modified
        if rel.startswith("src/") and rel.endswith(".py")
    }


def _check_imports(label: str, dists, comps, python: str, upstream_python, *, touched_only=False) -> None:
    mods, own, skipped = [], set(), []
    for comp in comps:
        comp_mods, packages = art.modules(dists[comp.path]["wheel"])
        own |= packages
        if touched_only:
            # Every package, and the modules the series adds or changes.
            keep = packages | _touched_modules(comp)
            comp_mods = [m for m in comp_mods if m in keep]
        skipped += [m for m in comp_mods if art.not_importable_by_design(m)]
        mods += [m for m in comp_mods if not art.not_importable_by_design(m)]
    result = _import_all(python, mods, own)
    print(f"\n{label}: {result['imported']} of {len(mods)} modules imported")
    _say("not imported by design (scripts that run on import)", skipped)
    _say(
        "skipped: an optional dependency is not installed",
        [f"{m}: {why}" for m, why in sorted(result["optional"].items())],
    )
    failed = result["failed"]
    if not failed:
        return
    # Upstream's own wheels in the same environment: a module that fails there too is upstream's.
    again = _import_all(upstream_python(), sorted(failed), own)["failed"]
    known = {m: why for m, why in failed.items() if m in again}
    _say(
        "failing with upstream's own wheels too (upstream's, not ours)",
        [f"{m}: {w}" for m, w in known.items()],
    )
    ours = {m: why for m, why in failed.items() if m not in again}
    assert not ours, "modules of our wheels that do not import:\n" + "\n".join(
        f"  {m}: {why}" for m, why in sorted(ours.items())
    )


# ------------------------------------------------------------------------------------- tests


def test_every_patched_component_is_built_with_checksums(built):
    assert sorted(built) == sorted(_ids(COMPONENTS))
    outdir = next(iter(built.values()))["wheel"].parent
    _run(["sha256sum", "--check", "--quiet", build_mod.SUMS], cwd=outdir)
    for comp in COMPONENTS:
        label = build_mod.default_label(CFG, comp)
        for kind, path in built[comp.path].items():
            assert f"-{comp.pin.version}+{label}" in path.name, (kind, path.name)


@pytest.mark.parametrize("comp", COMPONENTS, ids=_ids(COMPONENTS))
def test_release_files(dists, comp):
    d = dists[comp.path]
    assert not art.release_files(d["wheel"], d["sdist"])


@pytest.mark.parametrize("comp", COMPONENTS, ids=_ids(COMPONENTS))
def test_sdist_contains_what_its_wheel_contains(dists, comp):
    d = dists[comp.path]
    problems = art.sdist_covers_wheel(d["wheel"], d["sdist"])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("comp", COMPONENTS, ids=_ids(COMPONENTS))
def test_artifacts_differ_from_upstreams_only_by_the_series(dists, comp):
    d = dists[comp.path]
    added, deleted = art.patch_changes(CFG, comp)
    reports = [
        art.compare_with_upstream("sdist", d["sdist"], d["upstream_sdist"], added, deleted),
        art.compare_with_upstream(
            "wheel",
            d["wheel"],
            d["upstream_wheel"],
            added,
            deleted,
            to_rel=art.wheel_to_component,
            from_rel=art.component_to_wheel,
        ),
        art.compare_wheel_metadata(d["wheel"], d["upstream_wheel"]),
    ]
    _say(f"{comp.path}: differences from upstream's artifacts", [n for r in reports for n in r.notes])
    problems = [p for r in reports for p in r.problems]
    assert not problems, "\n".join(problems)


def test_every_module_of_the_wheels_imports(dists, venv, request):
    _check_imports("main", dists, COMPONENTS, venv, lambda: request.getfixturevalue("upstream_venv"))


def test_providers_install_and_import_on_the_stable_core(dists, stable_venv, request):
    out = _run([stable_venv, "-c", "import airflow, airflow.sdk; print(airflow.__version__)"]).stdout
    (core,) = [p for p in CFG.baseline("stable").pins if p.dist == "apache-airflow-core"]
    assert out.strip() == core.version, out
    # Not every module (the main venv imports those): what the series touched, and every package.
    _check_imports(
        "stable",
        dists,
        PROVIDERS,
        stable_venv,
        lambda: request.getfixturevalue("upstream_stable_venv"),
        touched_only=True,
    )


PROVIDER_INFO = """
import importlib, json, sys
from airflow.configuration import conf
conf.load_providers_configuration()
out = {}
for package in sys.argv[1:]:
    info = importlib.import_module(package + ".get_provider_info").get_provider_info()
    options = {s: sorted((b.get("options") or {})) for s, b in (info.get("config") or {}).items()}
    readable = {f"{s}.{o}": conf.get(s, o, fallback=None) is not None for s, opts in options.items() for o in opts}
    out[package] = {"options": options, "readable": readable, "package-name": info.get("package-name")}
print(json.dumps(out))
"""


def _upstream_provider_info(wheel: art.Dist, package: str) -> dict:
    source = wheel.files[package.replace(".", "/") + "/get_provider_info.py"]
    namespace: dict = {}
    exec(compile(source, "get_provider_info.py", "exec"), namespace)  # noqa: S102 (a pure function of upstream's)
    return namespace["get_provider_info"]()


def test_providers_declare_the_config_options_the_series_adds(dists, venv):
    packages = {c.path: "airflow." + c.path.replace("/", ".") for c in PROVIDERS}
    with tempfile.TemporaryDirectory(prefix="artifacts-info-") as home:
        proc = _run([venv, "-c", PROVIDER_INFO, *packages.values()], env=_airflow_env(Path(home)))
    installed = json.loads(proc.stdout.strip().splitlines()[-1])
    problems, lines = [], []
    for comp in PROVIDERS:
        got = installed[packages[comp.path]]
        ours = {(s, o) for s, opts in got["options"].items() for o in opts}
        upstream = art.config_options(
            _upstream_provider_info(dists[comp.path]["upstream_wheel"], packages[comp.path])
        )
        new = sorted(ours - upstream)
        lines += [f"{comp.path}: [{s}] {o}" for s, o in new]
        problems += [
            f"{comp.path}: [{s}] {o} is gone from get_provider_info" for s, o in sorted(upstream - ours)
        ]
        yaml_file = CFG.work_tree / comp.path / "provider.yaml"
        if yaml_file.exists():
            declared = art.config_options(yaml.safe_load(yaml_file.read_text()))
            problems += [
                f"{comp.path}: [{s}] {o} is in provider.yaml, not in get_provider_info"
                for s, o in sorted(declared - ours)
            ]
        problems += [
            f"{comp.path}: [{s}] {o} has no value in the installed Airflow's configuration"
            for s, o in new
            if not got["readable"][f"{s}.{o}"]
        ]
    _say("config options the series adds (in get_provider_info, readable through conf)", lines)
    assert not problems, "\n".join(problems)


def _head_revision(wheel: art.Dist) -> str:
    """The ``revision`` of core's last migration (highest number) in the wheel."""
    versions = sorted(
        n
        for n in wheel.names
        if n.startswith("airflow/migrations/versions/") and n.endswith(".py") and n[28:32].isdigit()
    )
    text = wheel.files[versions[-1]].decode()
    for line in text.splitlines():
        if line.startswith("revision = "):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise AssertionError(f"no revision in {versions[-1]}")


@pytest.fixture(scope="module")
def stack(venv):
    """Airflow from the wheels: `airflow db migrate` on SQLite, api-server, dag-processor, scheduler."""
    from callback_e2e.scenarios import start_scheduling
    from callback_e2e.stack import AirflowStack

    where = _run([venv, "-c", "import airflow; print(airflow.__file__)"]).stdout.strip()
    assert where.startswith(str(CACHE / "venv-main")), f"airflow comes from {where}, not the wheels"
    with AirflowStack(venv, config={"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}) as stack:
        # Patient: on a loaded 2-core machine a fresh install's api-server takes minutes to serve.
        stack.wait_healthy(timeout=300)
        start_scheduling(stack, ["e2e_deadline_ok"])
        yield stack


def test_db_migrate_on_sqlite_reaches_the_series_head(dists, stack):
    # The stack ran `airflow db migrate` on its SQLite database before it started anything.
    assert "sqlite" in stack.config["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    (revision,) = stack.query("SELECT version_num FROM alembic_version")[0]
    assert revision == _head_revision(dists["airflow-core"]["wheel"])
    columns = {row[1] for row in stack.query("PRAGMA table_info(callback)")}
    # Columns the series' migrations add.
    assert {"queued_by_job_id", "queued_at", "last_heartbeat_at"} <= columns, columns


def test_a_deadline_alert_callback_runs_on_local_executor(stack):
    from callback_e2e.common import SUCCESS_LOG
    from callback_e2e.scenarios import deadline_phases, wait_deadline_finished

    stack.trigger("e2e_deadline_ok", "artifacts-ok-1")
    callback = wait_deadline_finished(stack, "e2e_deadline_ok")
    assert callback["state"] == "success", (callback["output"], stack.logs())
    assert deadline_phases(stack, "e2e_deadline_ok") == {"started": 1, "ended": 1}
    assert SUCCESS_LOG in stack.callback_log(callback["id"])
