"""One Airflow deployment for the bench: api-server, scheduler (LocalExecutor), dag-processor.

Each stack has its own AIRFLOW_HOME, PostgreSQL database and api-server port; everything
binds to loopback.  Components run as leaders of their own process groups (see
``demo_stack.procs``) so that stopping a stack stops every process it started.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench_tool.dags import PROBE_ENV_VAR, write_dags
from bench_tool.pg import sqlalchemy_url
from demo_stack.airflow_home import SIMPLE_AUTH_MANAGER, child_environment, fernet_key
from demo_stack.api import AirflowApi, ApiError
from demo_stack.ports import LOOPBACK, find_free_port
from demo_stack.procs import ManagedProcess, stop_processes, tail

SHIM_DIR = Path(__file__).resolve().parent / "statsd_shim"
PARALLELISM = 8

# Settings that differ from Airflow's defaults, and why.  Recorded in the JSON.
NON_DEFAULT_SETTINGS = {
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    "AIRFLOW__API__HOST": LOOPBACK,
    "AIRFLOW__API__WORKERS": "1",
    "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
    "AIRFLOW__METRICS__STATSD_ON": "True",
    "AIRFLOW__METRICS__STATSD_HOST": LOOPBACK,
}


class StackError(Exception):
    def __init__(self, message: str, logs: Sequence[Path] = ()) -> None:
        super().__init__(message)
        self.logs = list(logs)


class Stack:
    def __init__(
        self,
        name: str,
        root: Path,
        dbname: str,
        python: str,
        statsd_port: int,
        extra_env: Mapping[str, str] | None = None,
        use_shim: bool = False,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.root = root
        self.dbname = dbname
        self.python = python
        self.statsd_port = statsd_port
        self.extra_env = dict(extra_env or {})
        self.use_shim = use_shim
        self.api_port = find_free_port(LOOPBACK)
        self.api = AirflowApi(f"http://{LOOPBACK}:{self.api_port}", timeout=30)
        self.procs: list[ManagedProcess] = []
        self.env = child_environment(base_env or {}, self.config())

    @property
    def dags(self) -> Path:
        return self.root / "dags"

    @property
    def probe_file(self) -> Path:
        return self.root / "probe.jsonl"

    def log_path(self, component: str) -> Path:
        return self.root / "process-logs" / f"{component}.log"

    def config(self) -> dict[str, str]:
        api_url = f"http://{LOOPBACK}:{self.api_port}"
        config = {
            "AIRFLOW_HOME": str(self.root),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__FERNET_KEY": fernet_key(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.root / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy_url(self.dbname),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.root / "logs"),
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": api_url,
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(48),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__METRICS__STATSD_PORT": str(self.statsd_port),
            "AIRFLOW__METRICS__STATSD_PREFIX": f"bench_{self.name}",
            PROBE_ENV_VAR: str(self.probe_file),
            **NON_DEFAULT_SETTINGS,
            **self.extra_env,
        }
        if self.use_shim:
            config["PYTHONPATH"] = str(SHIM_DIR)
        return config

    def prepare(self, fillers: int, deadline: bool) -> list[str]:
        (self.root / "process-logs").mkdir(parents=True, exist_ok=True)
        self.probe_file.touch()
        return write_dags(self.dags, fillers=fillers, deadline=deadline, hold_tasks=PARALLELISM)

    def airflow(self, *args: str) -> list[str]:
        return [self.python, "-m", "airflow", *args]

    def run_cli(self, *args: str, timeout: float = 600, log_name: str = "cli") -> None:
        log_path = self.log_path(log_name)
        with open(log_path, "ab") as handle:
            proc = subprocess.run(
                self.airflow(*args),
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.root,
                timeout=timeout,
                check=False,
                start_new_session=True,
            )
        if proc.returncode != 0:
            raise StackError(f"airflow {' '.join(args)} failed (exit {proc.returncode})", [log_path])

    def start(self) -> None:
        components = (
            (
                "api-server",
                ("api-server", "--host", LOOPBACK, "--port", str(self.api_port), "--workers", "1"),
            ),
            ("scheduler", ("scheduler", "--skip-serve-logs")),
            ("dag-processor", ("dag-processor",)),
        )
        for component, args in components:
            proc = ManagedProcess(f"{self.name}/{component}", self.airflow(*args), self.log_path(component))
            proc.start(self.env, cwd=self.root)
            self.procs.append(proc)

    def check_alive(self) -> None:
        for proc in self.procs:
            code = proc.returncode()
            if code is not None:
                raise StackError(f"{proc.name} exited with code {code}", [proc.log_path])

    def wait_ready(self, dag_ids: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                self.api.health()
                break
            except ApiError:
                pass
            if time.monotonic() > deadline:
                raise StackError(f"{self.name}: api-server not healthy", [self.log_path("api-server")])
            time.sleep(0.5)
        pending = set(dag_ids)
        while pending:
            self.check_alive()
            try:
                listed = self.api.request("GET", "/api/v2/dags?limit=1000")
                pending -= {dag["dag_id"] for dag in listed.get("dags", [])}
            except ApiError:
                pass
            if not pending:
                break
            if time.monotonic() > deadline:
                errors = ""
                with contextlib.suppress(ApiError):
                    errors = str(self.api.import_errors())[:2000]
                raise StackError(
                    f"{self.name}: Dags not parsed in time: {sorted(pending)[:5]} {errors}",
                    [self.log_path("dag-processor")],
                )
            time.sleep(1.0)

    def stop(self, grace: float = 15.0) -> list[int]:
        survivors = stop_processes(self.procs, grace=grace)
        return survivors

    def tail_logs(self, lines: int = 30) -> str:
        parts = []
        for proc in self.procs:
            parts.append(f"----- {proc.log_path} -----\n{tail(proc.log_path, lines)}")
        return "\n".join(parts)
