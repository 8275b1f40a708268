"""AWS Lambda's asynchronous invocations, run as local processes of the provider's own handler.

moto's Lambda ``Invoke`` runs a function in a docker container; there is no container engine here.
:class:`FakeLambda`, started beside a running :class:`~aws_e2e.fake.FakeAws`, replaces that for
``InvocationType=Event`` (what ``AwsLambdaExecutor`` uses) with what AWS Lambda does:

* ``Invoke`` of a function the account does not have (or an unknown qualifier) answers
  ``ResourceNotFoundException`` (moto's own check); a request payload larger than
  ``async_payload_limit`` bytes (1 MiB: AWS raised the asynchronous limit from 256 KB to 1 MB in 2025)
  answers ``RequestEntityTooLargeException`` (HTTP 413). Otherwise it answers 202 at once and queues
  the event (AWS Lambda's internal queue for asynchronous invocations).
* An agent thread runs at most ``capacity`` invocations at once (the concurrency), the oldest first:
  each as a local process of the runtime's interpreter (``python``) importing the *provider's*
  ``airflow.providers.amazon.aws.executors.aws_lambda.docker.app`` from the installed provider and
  calling its ``lambda_handler(event, context)``, with the function's environment: the "image"
  environment given to :class:`FakeLambda`, then the function's ``Environment.Variables``, then what
  Lambda sets itself (``AWS_LAMBDA_FUNCTION_NAME``, the region, the execution role's credentials,
  and here ``AWS_ENDPOINT_URL``, the fake's "AWS network"), so the handler's own boto3
  ``send_message`` reaches moto's SQS.
* The function's ``Timeout`` (seconds) holds: a handler still running then is killed.
* A handler that raised (the process exits non-zero) or timed out is a function error: Lambda
  retries the event ``MaximumRetryAttempts`` times (the function's event invoke configuration, 2
  by default), after ``retry_delay`` seconds (AWS: about one, then two minutes); then, when the
  function has a ``DeadLetterConfig`` whose target is an SQS queue, sends the event there (body: the
  event as JSON; attributes ``RequestID``, ``ErrorCode``, ``ErrorMessage``), as Lambda does.
  moto does not keep ``DeadLetterConfig``: a class-level patch keeps it on the function and in
  ``GetFunctionConfiguration``.

Faults on demand: :meth:`FakeLambda.fail_next_invokes` makes the next asynchronous ``Invoke`` calls
answer ``TooManyRequestsException`` (HTTP 429), as a throttled invocation does, and accept nothing.

Every attempt's output (the handler's log, which holds the command's output) goes to
``<logs_dir>/<request id>-<attempt>.log``. ``RequestResponse`` and ``DryRun`` invocations are
left to moto.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from aws_e2e.fake import ACCOUNT_ID, CREDENTIALS, REGION, FakeAws, LocalProcessAgent

ASYNC_PAYLOAD_LIMIT = 1024 * 1024
DEFAULT_MAX_RETRY_ATTEMPTS = 2
HANDLER_MODULE = "airflow.providers.amazon.aws.executors.aws_lambda.docker.app"
# The runtime: import the provider's handler module and call it with the event read from a file.
RUNTIME = (
    "import json, sys, types\n"
    f"from {HANDLER_MODULE} import lambda_handler\n"
    "with open(sys.argv[1]) as f:\n"
    "    event = json.load(f)\n"
    "context = types.SimpleNamespace(function_name=sys.argv[2], aws_request_id=sys.argv[3])\n"
    "lambda_handler(event, context)\n"
)


def payload_too_large_message(limit: int) -> str:
    return f"Request must be smaller than {limit} bytes for the Invoke operation"


@dataclass
class Invocation:
    """One accepted asynchronous invocation and what became of it."""

    request_id: str
    function_name: str
    payload: str
    state: str = "queued"
    """``queued``, ``running``, ``retrying``, ``succeeded`` or ``failed``."""
    exit_codes: list[int | None] = field(default_factory=list)
    """Each attempt's handler exit code (``None``: killed at the function's timeout)."""
    dead_lettered: bool = False
    not_before: float = 0.0

    @property
    def event(self) -> Any:
        return json.loads(self.payload)

    @property
    def attempts(self) -> int:
        return len(self.exit_codes)


@dataclass
class _Running:
    invocation: Invocation
    proc: subprocess.Popen
    log: Any
    deadline: float


# The FakeLambda the patched moto handler hands its events to (one per process at a time).
_ACTIVE: FakeLambda | None = None
_PATCHED = False


def _install_patches() -> None:
    """Patch moto's Lambda backend once per process (see the module docstring)."""
    global _PATCHED
    if _PATCHED:
        return
    from moto.awslambda.exceptions import LambdaClientError
    from moto.awslambda.models import LambdaBackend, LambdaFunction

    class RequestEntityTooLargeException(LambdaClientError):
        code = 413

        def __init__(self, limit: int):
            super().__init__("RequestEntityTooLargeException", payload_too_large_message(limit))

    class TooManyRequestsException(LambdaClientError):
        code = 429

        def __init__(self, message: str):
            super().__init__("TooManyRequestsException", message)

    original_invoke = LambdaBackend.invoke
    original_init = LambdaFunction.__init__
    original_configuration = LambdaFunction.get_configuration
    original_update = LambdaFunction.update_configuration

    def invoke(self, function_name, qualifier, body, headers, response_headers):
        fake = _ACTIVE
        if fake is None or headers.get("X-Amz-Invocation-Type") != "Event":
            return original_invoke(self, function_name, qualifier, body, headers, response_headers)
        fn = self.get_function(function_name, qualifier)  # ResourceNotFoundException when unknown
        raw = body.encode() if isinstance(body, str) else bytes(body or b"")
        if len(raw) > fake.async_payload_limit:
            raise RequestEntityTooLargeException(fake.async_payload_limit)
        if fake.invoke_failures:
            raise TooManyRequestsException(fake.invoke_failures.pop(0))
        request_id = str(uuid.uuid4())
        fake._accept(Invocation(request_id, fn.function_name, raw.decode() or "{}"))
        response_headers["x-amzn-RequestId"] = request_id
        response_headers["Content-Length"] = "0"
        return ""

    def init(self, account_id, spec, region, version=1):
        original_init(self, account_id, spec, region, version)
        self.dead_letter_config = spec.get("DeadLetterConfig")

    def get_configuration(self, *args, **kwargs):
        config = original_configuration(self, *args, **kwargs)
        if getattr(self, "dead_letter_config", None):
            config["DeadLetterConfig"] = self.dead_letter_config
        return config

    def update_configuration(self, config_updates):
        if "DeadLetterConfig" in config_updates:
            self.dead_letter_config = config_updates["DeadLetterConfig"]
        return original_update(self, config_updates)

    LambdaBackend.invoke = invoke
    LambdaFunction.__init__ = init
    LambdaFunction.get_configuration = get_configuration
    LambdaFunction.update_configuration = update_configuration
    _PATCHED = True


class FakeLambda(LocalProcessAgent):
    """
    ``with FakeLambda(aws, image_env, logs_dir) as lam:`` runs ``aws``'s asynchronous Lambda invocations.

    :param aws: the running :class:`FakeAws` whose moto serves Lambda and SQS.
    :param image_env: the environment of the function's "image", before the function's variables.
    :param logs_dir: where each attempt's output goes.
    :param python: the runtime's interpreter (the one whose environment has the provider installed).
    :param capacity: how many invocations run at once; the others wait queued.
    :param retry_delay: seconds before a failed event is retried.
    :param async_payload_limit: the largest request payload an asynchronous invocation accepts.
    """

    def __init__(
        self,
        aws: FakeAws,
        image_env: Mapping[str, str],
        logs_dir: Path,
        python: str = sys.executable,
        capacity: int = 4,
        retry_delay: float = 1.0,
        async_payload_limit: int = ASYNC_PAYLOAD_LIMIT,
        poll: float = 0.1,
    ):
        self.aws = aws
        self.image_env = dict(image_env)
        self.logs_dir = Path(logs_dir)
        self.python = python
        self.capacity = capacity
        self.retry_delay = retry_delay
        self.async_payload_limit = async_payload_limit
        self._init_agent("fake-lambda-agent", poll)
        self.invocations: list[Invocation] = []
        """Every accepted asynchronous invocation, in order."""
        self.invoke_failures: list[str] = []
        """Messages of the ``TooManyRequestsException`` the next Invoke calls answer."""
        self._queue: deque[Invocation] = deque()
        self._running: dict[str, _Running] = {}

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> Self:
        global _ACTIVE
        if _ACTIVE is not None:
            raise RuntimeError("another FakeLambda runs in this process (moto's backends are per process)")
        _install_patches()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        (self.logs_dir / "events").mkdir(exist_ok=True)
        _ACTIVE = self
        self._start_agent()
        return self

    def stop(self) -> None:
        """Stop the agent and kill the handlers still running; queued events are dropped."""
        global _ACTIVE
        self._stop_agent(self._running)
        with self._lock:
            self._queue.clear()
        if _ACTIVE is self:
            _ACTIVE = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next_invokes(self, count: int = 1, message: str = "Rate exceeded") -> None:
        """The next ``count`` asynchronous Invoke calls accept nothing and answer ``TooManyRequestsException``."""
        self.invoke_failures.extend([message] * count)

    # -- observations -----------------------------------------------------------------------------
    def invocations_for(self, task_key: str) -> list[Invocation]:
        """The invocations whose event carries ``task_key``."""
        found = []
        for invocation in list(self.invocations):
            with contextlib.suppress(ValueError, AttributeError):
                if invocation.event.get("task_key") == task_key:
                    found.append(invocation)
        return found

    def running_count(self) -> int:
        with self._lock:
            return len(self._running)

    def log(self, invocation: Invocation) -> str:
        return "".join(
            path.read_text(errors="replace")
            for path in sorted(self.logs_dir.glob(f"{invocation.request_id}-*.log"))
        )

    def wait_idle(self, timeout: float = 60) -> None:
        """Wait until no invocation is queued, running or waiting for a retry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(i.state in ("succeeded", "failed") for i in list(self.invocations)):
                return
            time.sleep(self.poll)
        raise TimeoutError(f"invocations still pending after {timeout}s: {self.invocations}")

    # -- the service --------------------------------------------------------------------------------
    def _accept(self, invocation: Invocation) -> None:
        with self._lock:
            self.invocations.append(invocation)
            self._queue.append(invocation)

    def _step(self) -> None:
        finished: list[tuple[Invocation, int | None]] = []
        with self._lock:
            now = time.monotonic()
            for request_id, running in list(self._running.items()):
                code = running.proc.poll()
                if code is None and now > running.deadline:
                    self._kill(running.proc)
                    running.log.write(b"Task timed out\n")
                    code, timed_out = None, True
                elif code is None:
                    continue
                else:
                    timed_out = False
                running.log.close()
                del self._running[request_id]
                finished.append((running.invocation, None if timed_out else code))
            for _ in range(len(self._queue)):
                if len(self._running) >= self.capacity:
                    break
                invocation = self._queue.popleft()
                if invocation.not_before > now:
                    self._queue.append(invocation)
                    continue
                self._launch(invocation)
        for invocation, code in finished:
            self._finished(invocation, code)

    def _function(self, name: str) -> Any:
        from moto.awslambda.models import lambda_backends

        return lambda_backends[ACCOUNT_ID][REGION].get_function(name)

    def _environment(self, fn: Any) -> dict[str, str]:
        env = dict(self.image_env)
        env.update({k: str(v) for k, v in (fn.environment_vars or {}).items()})
        env.update(CREDENTIALS)
        env.update(
            {
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_LAMBDA_FUNCTION_NAME": fn.function_name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_ENDPOINT_URL": self.aws.endpoint_url,
            }
        )
        return env

    def _launch(self, invocation: Invocation) -> None:
        fn = self._function(invocation.function_name)
        attempt = invocation.attempts + 1
        event_path = self.logs_dir / "events" / f"{invocation.request_id}.json"
        event_path.write_text(invocation.payload)
        log = open(self.logs_dir / f"{invocation.request_id}-{attempt}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [self.python, "-c", RUNTIME, str(event_path), fn.function_name, invocation.request_id],
            env=self._environment(fn),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        invocation.state = "running"
        self._running[invocation.request_id] = _Running(
            invocation, proc, log, time.monotonic() + float(fn.timeout)
        )

    def _finished(self, invocation: Invocation, code: int | None) -> None:
        invocation.exit_codes.append(code)
        if code == 0:
            invocation.state = "succeeded"
            return
        fn = self._function(invocation.function_name)
        retries = DEFAULT_MAX_RETRY_ATTEMPTS
        for config in fn.event_invoke_config:
            if config.config.get("MaximumRetryAttempts") is not None:
                retries = int(config.config["MaximumRetryAttempts"])
        if invocation.attempts <= retries:
            invocation.state = "retrying"
            invocation.not_before = time.monotonic() + self.retry_delay
            with self._lock:
                self._queue.append(invocation)
            return
        target = (getattr(fn, "dead_letter_config", None) or {}).get("TargetArn", "")
        try:
            if target.startswith("arn:aws:sqs:"):
                self._dead_letter(invocation, target, code)
        finally:
            invocation.state = "failed"

    def _dead_letter(self, invocation: Invocation, queue_arn: str, code: int | None) -> None:
        queue_name = queue_arn.rsplit(":", 1)[-1]
        sqs = self.aws.client("sqs")
        queue_url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
        error = "Task timed out" if code is None else f"Handler exited with code {code}"
        sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=invocation.payload,
            MessageAttributes={
                "RequestID": {"DataType": "String", "StringValue": invocation.request_id},
                "ErrorCode": {"DataType": "Number", "StringValue": "200"},
                "ErrorMessage": {"DataType": "String", "StringValue": error},
            },
        )
        invocation.dead_lettered = True


def queue_arn(queue_name: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{queue_name}"
