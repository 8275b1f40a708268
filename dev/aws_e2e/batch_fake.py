"""AWS Batch in the fake: each submitted job's container runs as a local process, as Batch would run it.

moto's Batch backend runs every job in a thread that starts a docker container; there is no
container engine here. :class:`FakeAwsBatch` is :class:`~aws_e2e.fake.FakeAws` (moto's server on
loopback and the ECS agent) whose agent also plays AWS Batch's scheduler and container agent. moto's
job threads are never started (class-level patch while a :class:`FakeAwsBatch` runs) and a job's
status moves only when the agent moves it:

* ``SubmitJob`` answers a job ``SUBMITTED``; the agent moves it to ``RUNNABLE`` on its next round.
* While fewer than ``capacity`` Batch jobs run, the agent takes the oldest ``RUNNABLE`` job, marks it
  ``STARTING`` and runs exactly its container command (``containerOverrides.command``, else the job
  definition's ``command``) as a local process, with the "image" environment given to the fake,
  then the job definition's ``environment``, then the override's, plus ``AWS_BATCH_JOB_ID``. On its
  next round the job is ``RUNNING``, with ``startedAt`` and ``container.logStreamName``.
* When the process exits the job is ``SUCCEEDED`` (exit code 0) or ``FAILED``, with
  ``container.exitCode`` (128 + signal when killed), ``statusReason`` ``"Essential container in task
  exited"`` and ``stoppedAt``.
* ``TerminateJob`` of a ``STARTING``/``RUNNING`` job: the agent sends SIGTERM, SIGKILL after
  ``stop_timeout`` seconds; the job ends ``FAILED`` with TerminateJob's reason and the exit code.
  ``TerminateJob`` or ``CancelJob`` of a job that has not started: ``FAILED`` with the reason, no
  ``startedAt``, no exit code.
* Logs: the container's output goes to ``<logs_dir>/<job id>.log`` and, when it exits, to moto's
  CloudWatch Logs as Batch's ``awslogs`` driver names it: group ``/aws/batch/job`` (created as Batch
  does) and stream ``<job definition name>/default/<job id>``, or the job definition's
  ``logConfiguration`` group (which must exist) and ``awslogs-stream-prefix``.

AWS behaviours moto lacks, restored (patches of moto's Batch backend and response handler):

* ``SubmitJob`` whose request payload is larger than 30 KiB (AWS Batch's "Maximum job payload size"
  service quota) is rejected with ``ClientException``. moto accepts any size.
* ``DescribeJobs`` of a job that failed before it started has no ``startedAt`` (moto: the epoch);
  it shows ``container.exitCode``, ``container.logStreamName`` and the job definition's
  ``container.logConfiguration`` (moto's detailed description drops the exit code), and describing a
  job no longer appends ``AWS_BATCH_JOB_ID`` to its override's environment each time.
* ``ListJobs`` without ``jobStatus`` and without ``filters`` lists only ``RUNNING`` jobs, as AWS
  does (moto lists all); with ``filters`` every status is listed (both).

Faults on demand: :meth:`FakeAwsBatch.fail_next_submit_jobs` makes the next ``SubmitJob`` calls fail
with a ``ClientException``, as a throttled or refused submission does.

What moto already rejects as AWS does, kept: an unknown job queue or job definition, an invalid job
name.
"""

from __future__ import annotations

import datetime
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from aws_e2e.fake import ACCOUNT_ID, ESSENTIAL_EXITED, REGION, FakeAws

BATCH_JOB_MODEL = "batch::job"
SUBMIT_JOB_PAYLOAD_LIMIT = 30 * 1024
PAYLOAD_TOO_LARGE = f"Job payload size exceeds the maximum of {SUBMIT_JOB_PAYLOAD_LIMIT} bytes (30 KiB)"
DEFAULT_LOG_GROUP = "/aws/batch/job"

_NEVER = datetime.datetime(1970, 1, 1)  # noqa: DTZ001 - moto's startedAt of a job that never started

_ACTIVE_BATCH: FakeAwsBatch | None = None
_PATCHED = False


def _now() -> datetime.datetime:
    # moto's Batch models keep naive local times.
    return datetime.datetime.now()  # noqa: DTZ005


@dataclass
class _RunningJob:
    """A Batch job whose container process the agent started."""

    job: Any
    proc: subprocess.Popen
    log: Any
    term_sent_at: float | None = None


def _install_batch_patches() -> None:
    """Patch moto's Batch backend and responses once per process (see the module docstring)."""
    global _PATCHED
    if _PATCHED:
        return
    from moto.batch.exceptions import ClientException
    from moto.batch.models import BatchBackend, Job
    from moto.batch.responses import BatchResponse

    original_start = Job.start
    original_describe = Job.describe
    original_get_container_property = Job._get_container_property
    original_submit_response = BatchResponse.submitjob
    original_list_jobs = BatchBackend.list_jobs

    def start(self):
        if _ACTIVE_BATCH is None:
            return original_start(self)
        # The agent runs the job; moto's docker thread never starts.
        return None

    def describe(self):
        result = original_describe(self)
        if self.job_started_at == _NEVER:
            result.pop("startedAt", None)  # moto: the epoch for a job that failed before it started
        container = result.get("container")
        if container is None or self.job_definition.type != "container":
            return result
        if self.exit_code is not None:
            container["exitCode"] = self.exit_code
        if self.log_stream_name:
            container["logStreamName"] = self.log_stream_name
        log_configuration = (self.job_definition.container_properties or {}).get("logConfiguration")
        if log_configuration:
            container["logConfiguration"] = log_configuration
        return result

    def get_container_property(self, p, default):
        if p != "environment":
            return original_get_container_property(self, p, default)
        return _job_environment(self)

    def submit_response(self):
        body = self.body if isinstance(self.body, bytes) else (self.body or "").encode()
        if len(body) > SUBMIT_JOB_PAYLOAD_LIMIT:
            raise ClientException(PAYLOAD_TOO_LARGE)
        fake = _ACTIVE_BATCH
        if fake is not None and fake.submit_failures:
            raise ClientException(fake.submit_failures.pop(0))
        return original_submit_response(self)

    def list_jobs(self, job_queue_name, array_job_id, job_status=None, filters=None):
        if job_status is None and not filters:
            job_status = "RUNNING"  # AWS: no status and no filters lists RUNNING jobs only
        return original_list_jobs(self, job_queue_name, array_job_id, job_status, filters)

    Job.start = start
    Job.describe = describe
    Job._get_container_property = get_container_property
    BatchResponse.submitjob = submit_response
    BatchBackend.list_jobs = list_jobs
    _PATCHED = True


def _job_environment(job: Any) -> list[dict[str, str]]:
    """The job's container environment as Batch shows it: the override's, the definition's, the job ID."""
    override = {e["name"]: e["value"] for e in job.container_overrides.get("environment") or []}
    definition = {
        e["name"]: e["value"]
        for e in (job.job_definition.container_properties or {}).get("environment") or []
    }
    merged = {**definition, **override, "AWS_BATCH_JOB_ID": job.job_id}
    return [{"name": name, "value": value} for name, value in merged.items()]


def job_command(job: Any) -> list[str]:
    """The command the job's container runs: the override's, else the job definition's."""
    return list(
        job.container_overrides.get("command")
        or (job.job_definition.container_properties or {}).get("command")
        or []
    )


class FakeAwsBatch(FakeAws):
    """
    :class:`FakeAws` whose agent also runs AWS Batch jobs as local processes (see the module docstring).

    :param capacity: ECS tasks running at once, and, separately, Batch jobs running at once (the
        others wait ``PENDING`` and ``RUNNABLE``).
    """

    def __init__(
        self,
        image_env: Mapping[str, str],
        logs_dir: Path,
        capacity: int = 4,
        stop_timeout: float = 30,
        poll: float = 0.2,
    ):
        super().__init__(image_env, logs_dir, capacity=capacity, stop_timeout=stop_timeout, poll=poll)
        self._jobs_running: dict[str, _RunningJob] = {}
        self.started_jobs: list[str] = []
        """IDs of the Batch jobs whose container the agent started, in order."""
        self.submit_failures: list[str] = []
        """Messages of the ``ClientException`` the next SubmitJob calls answer (see :meth:`fail_next_submit_jobs`)."""

    def fail_next_submit_jobs(self, count: int = 1, message: str = "Too many requests") -> None:
        """The next ``count`` SubmitJob calls create no job and answer ``ClientException`` with ``message``."""
        self.submit_failures.extend([message] * count)

    def start(self) -> Self:
        global _ACTIVE_BATCH
        from moto.moto_api import state_manager

        _install_batch_patches()
        # Jobs move only when the agent moves them, never because they were described.
        state_manager.set_transition(BATCH_JOB_MODEL, {"progression": "manual", "times": 2**62})
        _ACTIVE_BATCH = self
        try:
            return super().start()
        except BaseException:
            _ACTIVE_BATCH = None
            state_manager.unset_transition(BATCH_JOB_MODEL)
            raise

    def stop(self) -> None:
        global _ACTIVE_BATCH
        from moto.moto_api import state_manager

        self._stop_agent(self._jobs_running)
        super().stop()
        if _ACTIVE_BATCH is self:
            _ACTIVE_BATCH = None
        state_manager.unset_transition(BATCH_JOB_MODEL)

    # -- observations -----------------------------------------------------------------------------
    def batch_jobs(self) -> list[Any]:
        """Every Batch job moto knows, oldest first."""
        from moto.batch.models import batch_backends

        backend = batch_backends[ACCOUNT_ID][REGION]
        jobs = list(backend._jobs.values())  # a snapshot: moto's server thread adds jobs
        return sorted(jobs, key=lambda job: job.job_created_at)

    def job_log(self, job_id: str) -> str:
        path = self.logs_dir / f"{job_id}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def running_jobs_count(self) -> int:
        with self._lock:
            return len(self._jobs_running)

    # -- the agent --------------------------------------------------------------------------------
    def _step(self) -> None:
        super()._step()
        with self._lock:
            self._batch_step()

    def _batch_step(self) -> None:
        for job_id, running in list(self._jobs_running.items()):
            job, proc = running.job, running.proc
            if job.status == "STARTING":
                # Batch: the container started; the job is RUNNING from now on.
                job.status = "RUNNING"
                job.job_started_at = _now()
                job.log_stream_name = self._stream_name(job)
                job._start_attempt()
                continue
            code = proc.poll()
            if code is None and job.stop:
                if running.term_sent_at is None:
                    self._signal(proc, 15)
                    running.term_sent_at = time.monotonic()
                elif time.monotonic() - running.term_sent_at > self.stop_timeout:
                    self._kill(proc)
                continue
            if code is None:
                continue
            running.log.close()
            del self._jobs_running[job_id]
            self._ship_job_logs(job)
            self._job_exited(job, code)
        for job in self.batch_jobs():
            if job.job_definition.type != "container" or job._child_jobs:
                continue
            status = job.status
            if status in ("SUBMITTED", "PENDING", "RUNNABLE") and job.stop:
                # Cancelled or terminated before it started: no container ran, no exit code.
                job.job_stopped_reason = job.job_stopped_reason or "Job terminated"
                job._mark_stopped(success=False)
            elif status in ("SUBMITTED", "PENDING"):
                job.status = "RUNNABLE"
            elif status == "RUNNABLE" and len(self._jobs_running) < self.capacity:
                self._launch_job(job)

    def _launch_job(self, job: Any) -> None:
        env = dict(self.image_env)
        env.update({e["name"]: e["value"] for e in _job_environment(job)})
        log = open(self.logs_dir / f"{job.job_id}.log", "ab")  # noqa: SIM115 - open while the container runs
        try:
            proc = subprocess.Popen(
                job_command(job),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as err:
            # Batch: the container could not start; the job fails without an exit code.
            log.write(f"cannot start container: {err}\n".encode())
            log.close()
            job.job_stopped_reason = f"CannotStartContainerError: {err}"
            job._mark_stopped(success=False)
            return
        job.status = "STARTING"
        self._jobs_running[job.job_id] = _RunningJob(job, proc, log)
        self.started_jobs.append(job.job_id)

    @staticmethod
    def _job_exited(job: Any, code: int) -> None:
        # A process killed by a signal exits 128 + signal number in a container.
        exit_code = code if code >= 0 else 128 - code
        job.exit_code = exit_code
        if not job.stop:
            job.job_stopped_reason = ESSENTIAL_EXITED
        job._mark_stopped(success=exit_code == 0 and not job.stop)
        if job.latest_attempt is not None:
            job.latest_attempt["container"]["exitCode"] = exit_code
            job.latest_attempt["statusReason"] = job.job_stopped_reason

    @staticmethod
    def _log_target(job: Any) -> tuple[str, str, str]:
        """(region, group, stream prefix) of the job's ``awslogs`` output."""
        config = (job.job_definition.container_properties or {}).get("logConfiguration") or {}
        options = (config.get("options") or {}) if config.get("logDriver") == "awslogs" else {}
        return (
            options.get("awslogs-region", REGION),
            options.get("awslogs-group", DEFAULT_LOG_GROUP),
            options.get("awslogs-stream-prefix", job.job_definition.name),
        )

    def _stream_name(self, job: Any) -> str:
        return f"{self._log_target(job)[2]}/default/{job.job_id}"

    def _ship_job_logs(self, job: Any) -> None:
        """Put the container's output into CloudWatch Logs, as Batch's ``awslogs`` driver does."""
        from moto.logs.models import logs_backends

        region, group_name, _ = self._log_target(job)
        backend = logs_backends[ACCOUNT_ID][region]
        if group_name not in backend.groups:
            if group_name != DEFAULT_LOG_GROUP:
                return  # a configured group must exist; Batch creates only its default one
            backend.create_log_group(group_name, {})
        group = backend.groups[group_name]
        stream = job.log_stream_name or self._stream_name(job)
        job.log_stream_name = stream
        if stream not in group.streams:
            group.create_log_stream(stream)
        now = int(time.time() * 1000)
        lines = self.job_log(job.job_id).splitlines()
        events = [{"timestamp": now, "message": line} for line in lines if line.strip()]
        if events:
            group.put_log_events(stream, events)


__all__ = ["PAYLOAD_TOO_LARGE", "SUBMIT_JOB_PAYLOAD_LIMIT", "FakeAwsBatch", "job_command"]
