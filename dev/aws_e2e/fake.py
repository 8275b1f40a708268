"""moto in server mode on loopback, with an agent that runs ECS tasks as local processes.

:class:`FakeAws` starts ``moto.server.ThreadedMotoServer`` in the calling process (the executors'
boto3 clients reach it over HTTP through ``endpoint_url``) and an *agent* thread that reads moto's
ECS backend objects directly. It plays the part of the ECS container agent:

* A task that ``RunTask`` created starts ``PENDING`` (moto's automatic state progression is turned
  off: a task never moves on because it was described).
* While fewer than ``capacity`` tasks run, the agent takes the oldest ``PENDING`` task, runs exactly
  the command of its container (``overrides.containerOverrides[].command`` for the task
  definition's container, else the definition's own command) as a local subprocess, with the
  container's environment (the "image" environment given to :class:`FakeAws`, then the task
  definition's ``environment``, then the override's), and marks the task ``RUNNING`` with a
  ``startedAt``.
* When the process exits, the task is ``STOPPED`` with the container's real ``exitCode``,
  ``stoppedReason`` ``"Essential container in task exited"`` and a ``stoppedAt``, as ECS reports it.
* ``StopTask`` on a running task sets ``desiredStatus`` ``STOPPED``; the agent sends the process
  SIGTERM (SIGKILL after ``stop_timeout`` seconds, ECS's ``stopTimeout``) and reports the exit code
  with the StopTask reason. A task stopped before it started ends ``STOPPED`` without ``startedAt``
  and without an exit code.

AWS behaviours moto lacks, restored here (class-level patches of moto's ECS backend and response
handler, applied once per process while a :class:`FakeAws` runs; the ECS API's own error shapes):

* ``StopTask`` of a task the cluster does not know raises ``InvalidParameterException``
  ("The referenced task was not found.") instead of moto's internal server error. The
  ECS executor's startup health check depends on it.
* ``RunTask`` whose ``overrides`` are longer than 8192 characters (the JSON of the overrides, the
  way the ECS API measures the ``overrides`` member) is rejected with
  ``InvalidParameterException`` ("Container Overrides length must be at most 8192"). moto accepts
  any size.
* Capacity failures: :meth:`FakeAws.fail_next_run_tasks` makes the next ``RunTask`` calls return
  no task and a ``failures`` entry (``RESOURCE:MEMORY`` by default), as ECS does when no capacity
  can place the task.

Each task's container output goes to ``<logs_dir>/<task id>.log``. When the task definition's
container has an ``awslogs`` ``logConfiguration`` with a stream prefix, the agent also puts the
output into CloudWatch Logs (moto's) when the container exits, in stream
``<prefix>/<container name>/<task id>`` of the configured group, as ECS's ``awslogs`` driver names it
(the group must exist, as without ``awslogs-create-group``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from demo_stack.ports import LOOPBACK, find_free_port

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
ECS_TASK_MODEL = "ecs::task"
OVERRIDES_LIMIT = 8192
OVERRIDES_TOO_LONG = f"Container Overrides length must be at most {OVERRIDES_LIMIT}"
TASK_NOT_FOUND = "The referenced task was not found."
ESSENTIAL_EXITED = "Essential container in task exited"
# Credentials moto accepts; nothing real.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


def overrides_length(overrides: Mapping[str, Any] | None) -> int:
    """The length ECS compares with 8192: the overrides as compact JSON."""
    return len(json.dumps(overrides or {}, separators=(",", ":")))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class _Running:
    """A task whose container process the agent started."""

    task: Any
    proc: subprocess.Popen
    log: Any
    term_sent_at: float | None = None


@dataclass
class _Faults:
    run_task_failures: list[str] = field(default_factory=list)


# The FakeAws whose faults and agent the patched moto handlers consult (one per process at a time).
_ACTIVE: FakeAws | None = None
_PATCHED = False


def _install_patches() -> None:
    """Patch moto's ECS backend and responses once per process (see the module docstring)."""
    global _PATCHED
    if _PATCHED:
        return
    from moto.core.responses import ActionResult
    from moto.ecs.exceptions import InvalidParameterException
    from moto.ecs.models import EC2ContainerServiceBackend
    from moto.ecs.responses import EC2ContainerServiceResponse

    original_run_task_response = EC2ContainerServiceResponse.run_task
    original_run_task = EC2ContainerServiceBackend.run_task
    original_stop_task = EC2ContainerServiceBackend.stop_task

    def run_task_response(self):
        overrides = self._get_param("overrides")
        if overrides_length(overrides) > OVERRIDES_LIMIT:
            raise InvalidParameterException(OVERRIDES_TOO_LONG)
        fake = _ACTIVE
        if fake is not None and fake.faults.run_task_failures:
            reason = fake.faults.run_task_failures.pop(0)
            cluster = self.ecs_backend._get_cluster(self._get_param("cluster", "default"))
            return ActionResult({"tasks": [], "failures": [{"arn": cluster.arn, "reason": reason}]})
        return original_run_task_response(self)

    def run_task(self, *args, **kwargs):
        tasks = original_run_task(self, *args, **kwargs)
        for task in tasks:
            # ECS answers RunTask with a task still provisioning; the agent starts it.
            task.last_status = "PENDING"
            task.created_at = _now()
            for container in task.containers:
                container.last_status = "PENDING"
                container.exitCode = None
        return tasks

    def stop_task(self, cluster_str, task_str, reason):
        cluster = self._get_cluster(cluster_str)
        task_id = task_str.split("/")[-1]
        matching = [t for arn, t in self.tasks.get(cluster.name, {}).items() if arn.endswith(task_id)]
        if not matching:
            raise InvalidParameterException(TASK_NOT_FOUND)
        task = matching[0]
        fake = _ACTIVE
        if fake is None or task.last_status == "STOPPED":
            return original_stop_task(self, cluster_str, task_str, reason)
        # Like ECS: the task is asked to stop; the agent stops the container and reports how it ended.
        task.desired_status = "STOPPED"
        task.stopped_reason = reason or "Task stopped by user"
        task.stop_code = "UserInitiated"
        return task

    EC2ContainerServiceResponse.run_task = run_task_response
    EC2ContainerServiceBackend.run_task = run_task
    EC2ContainerServiceBackend.stop_task = stop_task
    _PATCHED = True


class LocalProcessAgent:
    """
    What every fake AWS service here shares: an agent thread that plays the service, calling
    :meth:`_step` every ``poll`` seconds until stopped (an error is kept in ``agent_errors`` and the
    agent goes on), and the local processes it runs, each in a process group of its own.

    A subclass calls :meth:`_init_agent` in its ``__init__``, :meth:`_start_agent` and
    :meth:`_stop_agent` around its service, and keeps what it runs in maps of objects with a
    ``proc`` and a ``log``, which :meth:`_stop_agent` kills and closes.
    """

    def _init_agent(self, name: str, poll: float) -> None:
        self.poll = poll
        self.agent_errors: list[str] = []
        self._agent_name = name
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def _start_agent(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._agent, name=self._agent_name, daemon=True)
        self._thread.start()

    def _stop_agent(self, *running_maps: dict[str, Any]) -> None:
        """Stop the agent thread, then kill the processes of ``running_maps`` and forget them."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        with self._lock:
            for running_map in running_maps:
                for running in running_map.values():
                    self._kill(running.proc)
                    running.log.close()
                running_map.clear()

    def _agent(self) -> None:
        while not self._stopping.is_set():
            try:
                self._step()
            except Exception as err:  # noqa: BLE001 - keep the agent alive; tests read agent_errors
                self.agent_errors.append(repr(err))
            self._stopping.wait(self.poll)

    def _step(self) -> None:
        raise NotImplementedError

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    @classmethod
    def _kill(cls, proc: subprocess.Popen) -> None:
        cls._signal(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


class FakeAws(LocalProcessAgent):
    """
    ``with FakeAws(image_env) as aws:`` starts moto on loopback and the ECS agent; stops both on exit.

    :param image_env: the environment of every container (what the worker image would set), before
        the task definition's and the override's variables.
    :param logs_dir: where each container's output goes.
    :param capacity: how many tasks run at once; the others wait ``PENDING``.
    :param stop_timeout: seconds between SIGTERM and SIGKILL when a running task is stopped.
    """

    def __init__(
        self,
        image_env: Mapping[str, str],
        logs_dir: Path,
        capacity: int = 4,
        stop_timeout: float = 30,
        poll: float = 0.2,
    ):
        self.image_env = dict(image_env)
        self.logs_dir = Path(logs_dir)
        self.capacity = capacity
        self.stop_timeout = stop_timeout
        self._init_agent("fake-ecs-agent", poll)
        self.faults = _Faults()
        self.port: int | None = None
        self._server: Any = None
        self._running: dict[str, _Running] = {}
        self.started: list[str] = []
        """ARNs of the tasks whose container the agent started, in order."""

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("FakeAws is not started")
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Self:
        global _ACTIVE
        from moto.moto_api import state_manager
        from moto.server import ThreadedMotoServer

        if _ACTIVE is not None:
            raise RuntimeError("another FakeAws runs in this process (moto's backends are per process)")
        _install_patches()
        # Tasks move only when the agent moves them, never because they were described.
        state_manager.set_transition(ECS_TASK_MODEL, {"progression": "manual", "times": 2**62})
        # One line per request on stderr otherwise.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.port = find_free_port(LOOPBACK)
        self._server = ThreadedMotoServer(ip_address=LOOPBACK, port=self.port, verbose=False)
        self._server.start()
        _ACTIVE = self
        self._start_agent()
        return self

    def stop(self) -> None:
        """Stop the agent (killing the containers still running), then moto; forget moto's state."""
        global _ACTIVE
        from moto.moto_api import state_manager

        self._stop_agent(self._running)
        if self._server is not None:
            self._server.stop()
            self._server = None
        if _ACTIVE is self:
            _ACTIVE = None
        state_manager.unset_transition(ECS_TASK_MODEL)
        self._reset_backends()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _reset_backends() -> None:
        from moto.backends import get_backend

        for service in ("ecs", "batch", "logs", "sqs", "lambda", "iam", "ec2"):
            get_backend(service).reset()

    # -- configuration for clients ----------------------------------------------------------------
    def client_env(self) -> dict[str, str]:
        """Variables that point boto3 (and Airflow's ``aws_default`` connection) at this fake."""
        conn = {"conn_type": "aws", "extra": {"endpoint_url": self.endpoint_url, "region_name": REGION}}
        return {
            **CREDENTIALS,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(conn),
        }

    def client(self, service: str, config: Any = None) -> Any:
        """A boto3 client of ``service`` on the fake (``config``: a ``botocore.config.Config``)."""
        import boto3

        return boto3.client(
            service,
            config=config,
            region_name=REGION,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=CREDENTIALS["AWS_SESSION_TOKEN"],
        )

    # -- faults -----------------------------------------------------------------------------------
    def fail_next_run_tasks(self, count: int = 1, reason: str = "RESOURCE:MEMORY") -> None:
        """The next ``count`` RunTask calls place nothing and answer with a capacity failure."""
        self.faults.run_task_failures.extend([reason] * count)

    # -- observations -----------------------------------------------------------------------------
    def ecs_tasks(self) -> list[Any]:
        from moto.ecs.models import ecs_backends

        backend = ecs_backends[ACCOUNT_ID][REGION]
        return [task for tasks in list(backend.tasks.values()) for task in list(tasks.values())]

    def container_log(self, task_arn: str) -> str:
        path = self.logs_dir / f"{task_arn.split('/')[-1]}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def running_count(self) -> int:
        with self._lock:
            return len(self._running)

    # -- the agent --------------------------------------------------------------------------------
    def _step(self) -> None:
        with self._lock:
            for arn, running in list(self._running.items()):
                task, proc = running.task, running.proc
                code = proc.poll()
                if code is None and task.desired_status == "STOPPED":
                    if running.term_sent_at is None:
                        self._signal(proc, signal.SIGTERM)
                        running.term_sent_at = time.monotonic()
                    elif time.monotonic() - running.term_sent_at > self.stop_timeout:
                        self._kill(proc)
                    continue
                if code is None:
                    continue
                running.log.close()
                del self._running[arn]
                self._ship_logs(task)
                self._stopped(task, code)
            for task in sorted(self.ecs_tasks(), key=lambda t: getattr(t, "created_at", _now())):
                if task.last_status != "PENDING":
                    continue
                if task.desired_status == "STOPPED":
                    # Stopped before it started: no container ran, no exit code.
                    task.last_status = "STOPPED"
                    task.stopped_at = _now()
                    for container in task.containers:
                        container.last_status = "STOPPED"
                    continue
                if len(self._running) >= self.capacity:
                    continue
                self._launch(task)

    def _ship_logs(self, task: Any) -> None:
        """Put the container's output into CloudWatch Logs, as the ``awslogs`` log driver does."""
        from moto.ecs.models import ecs_backends
        from moto.logs.models import logs_backends

        definition = ecs_backends[ACCOUNT_ID][REGION].describe_task_definition(task.task_definition_arn)
        container_def = definition.container_definitions[0]
        config = container_def.get("logConfiguration") or {}
        options = config.get("options") or {}
        if config.get("logDriver") != "awslogs" or "awslogs-stream-prefix" not in options:
            return
        region = options.get("awslogs-region", REGION)
        group = logs_backends[ACCOUNT_ID][region].groups[options["awslogs-group"]]
        stream = f"{options['awslogs-stream-prefix']}/{container_def['name']}/{task.id}"
        if stream not in group.streams:
            group.create_log_stream(stream)
        now = int(time.time() * 1000)
        lines = (self.logs_dir / f"{task.id}.log").read_text(errors="replace").splitlines()
        events = [{"timestamp": now, "message": line} for line in lines if line.strip()]
        if events:
            group.put_log_events(stream, events)

    def _container(self, task: Any) -> tuple[list[str], dict[str, str]]:
        """The command and environment of the task's (first, essential) container."""
        from moto.ecs.models import ecs_backends

        backend = ecs_backends[ACCOUNT_ID][REGION]
        definition = backend.describe_task_definition(task.task_definition_arn)
        container_def = definition.container_definitions[0]
        name = container_def.get("name")
        command = list(container_def.get("command") or [])
        env = dict(self.image_env)
        env.update({e["name"]: e["value"] for e in container_def.get("environment") or []})
        for override in (task.overrides or {}).get("containerOverrides") or []:
            if override.get("name") == name:
                if override.get("command"):
                    command = list(override["command"])
                env.update({e["name"]: e["value"] for e in override.get("environment") or []})
        return command, env

    def _launch(self, task: Any) -> None:
        command, env = self._container(task)
        log = open(self.logs_dir / f"{task.id}.log", "ab")  # noqa: SIM115 - open while the container runs
        try:
            proc = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as err:
            # ECS: the container could not start (CannotStartContainerError); the task stops unstarted.
            log.write(f"cannot start container: {err}\n".encode())
            log.close()
            task.desired_status = "STOPPED"
            task.last_status = "STOPPED"
            task.stopped_reason = f"CannotStartContainerError: {err}"
            task.stopped_at = _now()
            return
        task.last_status = "RUNNING"
        task.started_at = _now()
        for container in task.containers:
            container.last_status = "RUNNING"
        self._running[task.task_arn] = _Running(task, proc, log)
        self.started.append(task.task_arn)

    @staticmethod
    def _stopped(task: Any, code: int) -> None:
        # A process killed by a signal exits 128 + signal number in a container.
        exit_code = code if code >= 0 else 128 - code
        if task.desired_status != "STOPPED":
            task.stopped_reason = ESSENTIAL_EXITED
            task.stop_code = "EssentialContainerExited"
        task.desired_status = "STOPPED"
        task.last_status = "STOPPED"
        task.stopped_at = _now()
        for container in task.containers:
            container.last_status = "STOPPED"
            container.exitCode = exit_code
