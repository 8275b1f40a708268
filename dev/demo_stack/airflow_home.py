"""The demo's throwaway AIRFLOW_HOME and the environment every Airflow process gets."""

from __future__ import annotations

import base64
import os
import secrets
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from demo_stack.markers import MARKER_ENV_VAR, MARKER_FILENAME
from demo_stack.ports import LOOPBACK

DAGS_SOURCE = Path(__file__).resolve().parent / "dags"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"

# Variables of the caller's environment that must not leak into the demo's Airflow.
_SCRUBBED_PREFIXES = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")
_SCRUBBED_NAMES = ("AIRFLOW_HOME", "AIRFLOW_CONFIG", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")


@dataclass(frozen=True)
class DemoHome:
    """Paths inside the throwaway AIRFLOW_HOME."""

    root: Path

    @property
    def dags(self) -> Path:
        return self.root / "dags"

    @property
    def logs(self) -> Path:
        """Airflow's ``[logging] base_log_folder`` (task and executor-callback logs)."""
        return self.root / "logs"

    @property
    def dag_processor_logs(self) -> Path:
        return self.logs / "dag_processor"

    @property
    def process_logs(self) -> Path:
        """Where the stdout/stderr of each component goes (one file per component)."""
        return self.root / "process-logs"

    @property
    def db(self) -> Path:
        return self.root / "airflow.db"

    @property
    def marker_file(self) -> Path:
        return self.root / MARKER_FILENAME

    def process_log(self, name: str) -> Path:
        return self.process_logs / f"{name}.log"

    def executor_callback_log(self, dag_id: str, run_id: str, callback_id: str) -> Path:
        return self.logs / "executor_callbacks" / dag_id / run_id / callback_id

    def create(self, dags_source: Path = DAGS_SOURCE) -> None:
        """Create the directory layout and copy the demo Dags in."""
        for path in (self.root, self.logs, self.dag_processor_logs, self.process_logs):
            path.mkdir(parents=True, exist_ok=True)
        shutil.copytree(
            dags_source,
            self.dags,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )


def fernet_key() -> str:
    """A valid Fernet key (url-safe base64 of 32 random bytes), made without ``cryptography``."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def airflow_config(home: DemoHome, api_port: int) -> dict[str, str]:
    """Configuration (as ``AIRFLOW__*`` environment variables) shared by all components."""
    api_url = f"http://{LOOPBACK}:{api_port}"
    return {
        "AIRFLOW_HOME": str(home.root),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home.dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__FERNET_KEY": fernet_key(),
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        # Everyone is admin: the REST API works without logging in.  Loopback only!
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home.root / "simple_auth_passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home.db}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home.logs),
        "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(home.dag_processor_logs),
        "AIRFLOW__API__HOST": LOOPBACK,
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(48),
        # 64+ bytes: shorter HMAC keys make PyJWT warn on every token.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        # The Task SDK's default 5s timeout makes workers retry calls when a loaded machine
        # (SQLite, one api-server worker) answers slowly, and the callback token exchange
        # (PATCH /execution/callbacks/{id}/run) is not idempotent: a retried exchange gets
        # 409 and the callback fails.  Be patient instead of retrying.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        # Quick turnaround for a demo.
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "2",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "60",
        # DAG run and task callbacks (on_success_callback / on_failure_callback / ...) run on the
        # executor (core 0022 renamed the option from dag_callback_runner; 3.3.2 ignores it).
        "AIRFLOW__CALLBACKS__RUNNER": "executor",
        MARKER_ENV_VAR: str(home.marker_file),
    }


def child_environment(base: Mapping[str, str], config: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment minus Airflow/Python settings, plus the demo configuration."""
    env = {
        key: value
        for key, value in base.items()
        if not key.startswith(_SCRUBBED_PREFIXES) and key not in _SCRUBBED_NAMES
    }
    env.update(config)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def write_env_file(path: Path, config: Mapping[str, str], python: str) -> None:
    """Write a sourceable file so a kept demo home can be poked at with the Airflow CLI."""
    lines = ["# source this file to use the Airflow CLI against the kept demo home"]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in sorted(config.items())]
    lines.append(f"alias airflow={shlex.quote(python)}' -m airflow'")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
