"""A "process kubelet": schedules pods onto one fake node and runs them as local processes."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fake_k8s.store import ABORT, CLOSE, Store, Watcher, meta, now_iso

NODE_NAME = "fake-node-1"
HOST_IP = "127.0.0.1"
# The kubelet's limits on termination messages (pkg/kubelet/container): what it reads of the file (its
# last bytes), of the log with FallbackToLogsOnError (last lines, then last bytes), and what the status
# keeps for all the pod's containers together (split evenly, the first bytes of each).
MAX_TERMINATION_MESSAGE_BYTES = 4096
MAX_TERMINATION_MESSAGE_LOG_LINES = 80
MAX_TERMINATION_MESSAGE_LOG_BYTES = 2048
MAX_POD_TERMINATION_MESSAGE_BYTES = 12 * 1024
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
CONTAINER_MOUNTS = Path(__file__).with_name("container_mounts.py")
UNSCHEDULABLE_MESSAGE = (
    "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: "
    "1 No preemption victims found for incoming pod."
)


@dataclass
class Faults:
    """Fault knobs, read by the kubelet each time it needs them (so they can flip while it runs)."""

    image_pull_fail_pattern: str | None = None  # re.search against the image: pull fails while it matches
    slow_start_seconds: float = 0.0  # delay between scheduling and the container starting
    image_pull_backoff_seconds: float = 1.0  # how long ErrImagePull shows before ImagePullBackOff
    unschedulable_pattern: str | None = (
        None  # re.search against the pod name: no node fits it while it matches
    )

    def image_pull_fails(self, image: str) -> bool:
        pattern = self.image_pull_fail_pattern
        return bool(pattern) and re.search(pattern, image) is not None

    def unschedulable(self, pod_name: str) -> bool:
        pattern = self.unschedulable_pattern
        return bool(pattern) and re.search(pattern, pod_name) is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "image_pull_fail_pattern": self.image_pull_fail_pattern,
            "unschedulable_pattern": self.unschedulable_pattern,
            "slow_start_seconds": self.slow_start_seconds,
            "image_pull_backoff_seconds": self.image_pull_backoff_seconds,
        }


@dataclass
class KubeletConfig:
    root_dir: Path
    base_env: dict[str, str] = field(default_factory=dict)
    executable_map: dict[str, str | list[str]] = field(default_factory=dict)
    path_prefix: list[str] = field(default_factory=list)
    image_entrypoints: dict[str, list[str]] = field(default_factory=dict)  # image regex -> ENTRYPOINT


_EXPAND = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: ``$$`` escapes, unknown references stay as written."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _EXPAND.sub(repl, value)


_mount_namespace_prefix: list[str] | None = None
_mount_namespace_probed = False
_probe_lock = threading.Lock()


def mount_namespace_prefix() -> list[str] | None:
    """How to start a process in a mount namespace of its own where a file can be bind-mounted.

    ``unshare --mount`` as root, else ``unshare --user --map-root-user --mount`` (unprivileged user
    namespaces); ``None`` when neither works here. Probed once: the whole mechanism, on a temp dir.
    """
    global _mount_namespace_prefix, _mount_namespace_probed
    with _probe_lock:
        if _mount_namespace_probed:
            return _mount_namespace_prefix
        _mount_namespace_probed = True
        unshare = shutil.which("unshare")
        if unshare is None:
            return None
        import sys
        import tempfile

        for prefix in (
            [unshare, "--mount", "--propagation", "private"],
            [unshare, "--user", "--map-root-user", "--mount", "--propagation", "private"],
        ):
            with tempfile.TemporaryDirectory(prefix="fake-k8s-probe-") as tmp:
                host = Path(tmp, "host-file")
                host.touch()
                inside = Path(tmp, "dir", "sub", "termination-log")
                write = f"open({str(inside)!r}, 'w').write('ok')"
                argv = [
                    *prefix,
                    *_container_mounts_argv(str(host), str(inside), str(Path(tmp, "mirror"))),
                    sys.executable,
                    "-c",
                    write,
                ]
                try:
                    done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
                except (OSError, subprocess.SubprocessError):
                    continue
                if done.returncode == 0 and host.read_text() == "ok" and not inside.exists():
                    _mount_namespace_prefix = prefix
                    return prefix
        return None


def _container_mounts_argv(host_file: str, container_path: str, mirror_dir: str) -> list[str]:
    import sys

    return [sys.executable, "-I", "-S", str(CONTAINER_MOUNTS), host_file, container_path, mirror_dir, "--"]


def _tail_lines(data: bytes, lines: int) -> bytes:
    """The last ``lines`` lines of ``data`` (a trailing newline ends the last line)."""
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts = parts[:-1]
        return b"\n".join(parts[-lines:]) + (b"\n" if parts else b"")
    return b"\n".join(parts[-lines:])


class ConfigError(Exception):
    """The container cannot be configured (kubelet: CreateContainerConfigError)."""


class StartError(Exception):
    """The container process cannot start (kubelet: StartError, exit code 128)."""


def _processes() -> list[tuple[int, int, int, int]]:
    """(pid, ppid, process group, session) of every live (non-zombie) process, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()
        if fields[0] in (b"Z", b"X"):
            continue
        out.append((int(entry), int(fields[1]), int(fields[2]), int(fields[3])))
    return out


def kill_container(pid: int) -> None:
    """SIGKILL a pod process and everything it started: its session, its process group, descendants.

    The pod process leads its own session; children that move to another process group (the task
    supervisor does) stay in that session. Only a descendant that calls setsid() *and* loses its
    parent first can escape, as nothing here is a PID namespace.
    """
    for _ in range(5):
        procs = _processes()
        children: dict[int, list[int]] = {}
        for p, ppid, _, _ in procs:
            children.setdefault(ppid, []).append(p)
        victims = {p for p, _, pgrp, sid in procs if sid == pid or pgrp == pid}
        todo = [pid, *victims]
        while todo:
            p = todo.pop()
            for child in children.get(p, []):
                if child not in victims:
                    victims.add(child)
                    todo.append(child)
        if os.getpid() in victims:  # never, unless someone passes our own pid
            victims.discard(os.getpid())
        alive = [p for p in victims if p == pid or any(p == q for q, _, _, _ in procs)]
        if not alive:
            return
        for p in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
        time.sleep(0.01)


def _exited(pid: int) -> bool:
    """Has the child exited? (It is not reaped: waitid with WNOWAIT.)"""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _condition(status: dict[str, Any], ctype: str, value: bool, reason: str | None = None) -> None:
    conds = status.setdefault("conditions", [])
    text = "True" if value else "False"
    for c in conds:
        if c["type"] == ctype:
            if c["status"] != text:
                c["status"] = text
                c["lastTransitionTime"] = now_iso()
            if reason:
                c["reason"] = reason
            else:
                c.pop("reason", None)
            return
    cond: dict[str, Any] = {
        "type": ctype,
        "status": text,
        "lastProbeTime": None,
        "lastTransitionTime": now_iso(),
    }
    if reason:
        cond["reason"] = reason
    conds.append(cond)


class PodWorker(threading.Thread):
    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]) -> None:
        md = meta(pod)
        super().__init__(name=f"fake-kubelet-{md['name']}", daemon=True)
        self.kubelet = kubelet
        self.namespace: str = md["namespace"]
        self.pod_name: str = md["name"]
        self.uid: str = md["uid"]
        self.dir = kubelet.config.root_dir / "pods" / self.uid
        self.workdir = self.dir / "work"
        self.proc: subprocess.Popen[bytes] | None = None
        self.reaped = True  # no live process to signal (set False while one runs, until it is reaped)
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping: str | None = None  # "delete" | "evict" | "lost" | "shutdown" | "deadline"
        self.grace = 0.0
        self.message = ""
        self.finished = threading.Event()
        self.exited = threading.Event()
        self.started_at: str | None = None
        self.restarts = 0
        self.termination_message = ""  # of the last run of the container, read when it exited
        self.termination_file: Path | None = None  # on the node, mounted at terminationMessagePath
        self.last_state: dict[str, Any] = {}

    # --- called from other threads ---------------------------------------------------------

    def log_path(self, container: str) -> Path:
        return self.dir / f"{container}.log"

    def stop_pod(self, why: str, grace: float = 0.0, message: str = "") -> None:
        with self.lock:
            if self.stopping not in (None, "delete"):
                return  # evicted, lost, past its deadline or shutting down: already killed
            if self.stopping == "delete":
                if why == "delete" and grace >= self.grace:
                    return
                grace = min(grace, self.grace)
            self.stopping, self.grace = why, grace
            if message:
                self.message = message
        self.wake.set()
        self.signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
        if grace > 0:
            threading.Thread(target=self._kill_later, args=(grace,), daemon=True).start()

    def _kill_later(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not self.reaped:
            time.sleep(0.05)
        self.signal(signal.SIGKILL)

    def signal(self, sig: int) -> None:
        """SIGTERM goes to the container's main process (as the kubelet does); SIGKILL to all of it.

        Only while the main process is not reaped: its pid (a zombie at worst) cannot be reused.
        """
        with self.lock:
            if self.proc is None or self.reaped:
                return
            if sig == signal.SIGKILL:
                kill_container(self.proc.pid)
            else:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(self.proc.pid, sig)

    # --- the pod's life --------------------------------------------------------------------

    def _update(self, mutate) -> dict[str, Any] | None:
        def guarded(pod: dict[str, Any]) -> dict[str, Any] | None:
            if meta(pod).get("uid") != self.uid:
                return None
            mutate(pod)
            return pod

        if self.stopping == "lost":
            return None
        return self.kubelet.store.internal_update("pods", self.namespace, self.pod_name, guarded)

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the pod is being stopped; True when it should go on."""
        deadline = time.monotonic() + seconds
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self.wake.wait(min(left, 0.2))
            self.wake.clear()
        return False

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001 - keep the fake alive; report on the pod
            self.message = f"fake kubelet error: {exc!r}"
            self._finish(None, "Error")
        finally:
            self.signal(signal.SIGKILL)
            self._reap()
            self.finished.set()
            self.kubelet.worker_done(self)

    def _containers(self, pod: dict[str, Any]) -> list[dict[str, Any]]:
        return list((pod.get("spec") or {}).get("containers") or [])

    def _statuses(
        self, pod: dict[str, Any], state: dict[str, Any], ready: bool = False, started: bool = False
    ):
        out = []
        for c in self._containers(pod):
            cs: dict[str, Any] = {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "ready": ready,
                "started": started,
                "restartCount": self.restarts,
                "state": state,
                "lastState": self.last_state,
            }
            if "waiting" not in state:
                cs["imageID"] = f"fake://{c.get('image', '')}"
                cs["containerID"] = f"fake://{self.uid}/{c['name']}"
            out.append(cs)
        return out

    def _run(self) -> None:
        kubelet = self.kubelet
        self.dir.mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(exist_ok=True)
        pod = kubelet.store.get("pods", self.namespace, self.pod_name)
        for c in self._containers(pod):
            self.log_path(c["name"]).touch()

        if kubelet.faults.unschedulable(self.pod_name) and not self._wait_schedulable(pod):
            return

        def bind(p: dict[str, Any]) -> None:
            p["spec"]["nodeName"] = NODE_NAME
            status = p.setdefault("status", {})
            _condition(status, "PodScheduled", True)
            for cond in status["conditions"]:
                if cond["type"] == "PodScheduled":
                    cond.pop("message", None)

        if self._update(bind) is None:
            return
        kubelet.event(
            pod, "Scheduled", f"Successfully assigned {self.namespace}/{self.pod_name} to {NODE_NAME}"
        )

        def pending(p: dict[str, Any]) -> None:
            st = p["status"]
            _condition(st, "PodReadyToStartContainers", True)
            _condition(st, "Initialized", True)
            _condition(st, "Ready", False, "ContainersNotReady")
            _condition(st, "ContainersReady", False, "ContainersNotReady")
            st.update(
                hostIP=HOST_IP,
                hostIPs=[{"ip": HOST_IP}],
                podIP=HOST_IP,
                podIPs=[{"ip": HOST_IP}],
                startTime=now_iso(),
            )
            st["containerStatuses"] = self._statuses(p, {"waiting": {"reason": "ContainerCreating"}})

        pod = self._update(pending)
        if pod is None:
            return
        container = self._containers(pod)[0]
        image = container.get("image", "")
        kubelet.event(pod, "Pulling", f'Pulling image "{image}"')
        first = True
        while kubelet.faults.image_pull_fails(image) and not self.stopping:
            msg = f'Failed to pull image "{image}": fake: image pull failure injected for "{image}"'
            self._waiting(pod, "ErrImagePull", msg)
            if first:  # the real kubelet aggregates repeats into one event's count
                kubelet.event(pod, "Failed", msg, "Warning")
            if not self._sleep(kubelet.faults.image_pull_backoff_seconds):
                break
            self._waiting(pod, "ImagePullBackOff", f'Back-off pulling image "{image}"')
            if first:
                kubelet.event(pod, "BackOff", f'Back-off pulling image "{image}"', "Normal")
            first = False
            if not self._sleep(kubelet.faults.image_pull_backoff_seconds * 2):
                break
        if self.stopping:
            self._finish(None, None)
            return
        kubelet.event(pod, "Pulled", f'Container image "{image}" already present on machine')
        if kubelet.faults.slow_start_seconds and not self._sleep(kubelet.faults.slow_start_seconds):
            self._finish(None, None)
            return
        pod = kubelet.store.get("pods", self.namespace, self.pod_name)
        if meta(pod).get("uid") != self.uid:
            return
        try:
            argv, env = kubelet.command_for(pod, container)
        except ConfigError as exc:
            self._waiting(pod, "CreateContainerConfigError", str(exc))
            kubelet.event(pod, "Failed", f"Error: {exc}", "Warning")
            while self._sleep(1.0):
                pass
            self._finish(None, None)
            return
        except StartError as exc:
            self.message = str(exc)
            kubelet.event(pod, "Failed", f"Error: {exc}", "Warning")
            argv, env = None, {}
        policy = (pod.get("spec") or {}).get("restartPolicy", "Always")
        ads = (pod.get("spec") or {}).get("activeDeadlineSeconds")
        deadline = time.monotonic() + ads if ads else None
        backoff = kubelet.restart_backoff_seconds
        while True:
            code = self._run_once(pod, container, argv, env, deadline)
            if code is None:  # stopped before the process started
                self._finish(None, None)
                return
            exit_code, reason = code
            restart = policy == "Always" or (policy == "OnFailure" and exit_code != 0)
            if self.stopping or not restart:
                self.exited.set()
                self._finish(exit_code, reason, started=reason != "StartError")
                return
            self.restarts += 1
            self.last_state = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": reason,
                    "startedAt": self.started_at,
                    "finishedAt": now_iso(),
                    "containerID": f"fake://{self.uid}/{container['name']}",
                }
            }
            if self.termination_message:
                self.last_state["terminated"]["message"] = self.termination_message
            message = (
                f"back-off {backoff:g}s restarting failed container={container['name']} pod={self.pod_name}"
            )
            self._crashloop(message)
            if self.restarts == 1:
                kubelet.event(pod, "BackOff", "Back-off restarting failed container", "Warning")
            if not self._sleep(backoff):
                self.exited.set()
                self._finish(exit_code, reason)
                return
            backoff = min(backoff * 2, kubelet.restart_backoff_max_seconds)

    def _run_once(self, pod, container, argv, env, deadline) -> tuple[int, str] | None:
        """Start the container process, report Running, wait; (exit code, reason) or None."""
        kubelet = self.kubelet
        with self.lock:
            if self.stopping:
                return None
            if argv is None:
                return 128, "StartError"
            log = open(self.log_path(container["name"]), "ab", buffering=0)  # noqa: SIM115
            try:
                self.proc = subprocess.Popen(
                    [*self._termination_message_mount(container), *argv],
                    cwd=self.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                self.reaped = False
            except OSError as exc:
                self.message = f"exec: {argv[0]!r}: {exc.strerror}"
                return 128, "StartError"
            finally:
                log.close()
        self.started_at = now_iso()
        kubelet.event(pod, "Created", f"Created container {container['name']}")
        kubelet.event(pod, "Started", f"Started container {container['name']}")

        def running(p: dict[str, Any]) -> None:
            st = p["status"]
            st["phase"] = "Running"
            _condition(st, "Ready", True)
            _condition(st, "ContainersReady", True)
            st["containerStatuses"] = self._statuses(
                p, {"running": {"startedAt": self.started_at}}, ready=True, started=True
            )

        self._update(running)
        # wait for the exit without reaping, so the pid stays ours while the rest is killed
        while not _exited(self.proc.pid):
            if deadline is not None and time.monotonic() > deadline and self.stopping != "deadline":
                self.stop_pod("deadline", 0, "Pod was active on the node longer than the specified deadline")
            if self.wake.wait(0.05):
                self.wake.clear()
        self.signal(signal.SIGKILL)  # the rest of the container's processes go with it
        code = self._reap()
        exit_code = code if code >= 0 else 128 - code
        reason = "Completed" if exit_code == 0 else "Error"
        self.termination_message = self._read_termination_message(pod, container, exit_code)
        return exit_code, reason

    def _termination_message_mount(self, container: dict[str, Any]) -> list[str]:
        """Create the container's termination message file on the node; the argv prefix mounting it.

        As the kubelet does, a new empty file (mode 0666) per run of the container, mounted at its
        ``terminationMessagePath`` in a mount namespace of the pod process's own. Where no mount
        namespace can be had, there is no file and no prefix (see the README).
        """
        self.termination_message = ""
        self.termination_file = None
        path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
        prefix = mount_namespace_prefix()
        if prefix is None:
            return []
        run = f"{container['name']}-{self.restarts}"
        host_file = self.dir / f"termination-log-{run}"
        host_file.write_bytes(b"")
        host_file.chmod(0o666)
        self.termination_file = host_file
        return [*prefix, *_container_mounts_argv(str(host_file), path, str(self.dir / f"mounts-{run}"))]

    def _read_termination_message(
        self, pod: dict[str, Any], container: dict[str, Any], exit_code: int
    ) -> str:
        """What the kubelet reports as ``state.terminated.message`` for the run that just ended.

        The last 4096 bytes of the termination message file; with ``FallbackToLogsOnError``, when
        the file is empty and the container failed, the end of its log (80 lines, 2048 bytes). The
        status keeps the first 12 KiB / number of containers of it.
        """
        data = b""
        if self.termination_file is not None:
            with contextlib.suppress(OSError), open(self.termination_file, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - MAX_TERMINATION_MESSAGE_BYTES))
                data = fh.read()
        fallback = container.get("terminationMessagePolicy") == "FallbackToLogsOnError" and exit_code != 0
        if not data and fallback:
            with contextlib.suppress(OSError):
                log = self.log_path(container["name"]).read_bytes()
                data = _tail_lines(log, MAX_TERMINATION_MESSAGE_LOG_LINES)[
                    -MAX_TERMINATION_MESSAGE_LOG_BYTES:
                ]
        spec = pod.get("spec") or {}
        containers = len(spec.get("containers") or []) + len(spec.get("initContainers") or [])
        return data[: MAX_POD_TERMINATION_MESSAGE_BYTES // max(containers, 1)].decode(errors="replace")

    def _reap(self) -> int:
        with self.lock:
            if self.proc is None:
                return 0
            code = self.proc.wait()
            self.reaped = True
            return code

    def _wait_schedulable(self, pod: dict[str, Any]) -> bool:
        """No node fits the pod: it stays Pending and unscheduled, as the scheduler leaves it, until the
        fault clears (True) or the pod goes (False)."""

        def unschedulable(p: dict[str, Any]) -> None:
            status = p.setdefault("status", {})
            _condition(status, "PodScheduled", False, "Unschedulable")
            for cond in status["conditions"]:
                if cond["type"] == "PodScheduled":
                    cond["message"] = UNSCHEDULABLE_MESSAGE

        if self._update(unschedulable) is None:
            return False
        # The scheduler records it once, then counts repeats into the same event.
        self.kubelet.event(pod, "FailedScheduling", UNSCHEDULABLE_MESSAGE, "Warning")
        while self.kubelet.faults.unschedulable(self.pod_name):
            if not self._sleep(0.2):
                return False
        return not self.stopping

    def _crashloop(self, message: str) -> None:
        def mutate(p: dict[str, Any]) -> None:
            st = p["status"]
            _condition(st, "Ready", False, "ContainersNotReady")
            _condition(st, "ContainersReady", False, "ContainersNotReady")
            st["containerStatuses"] = self._statuses(
                p, {"waiting": {"reason": "CrashLoopBackOff", "message": message}}, started=False
            )

        self._update(mutate)

    def _waiting(self, pod: dict[str, Any], reason: str, message: str) -> None:
        def mutate(p: dict[str, Any]) -> None:
            p["status"]["containerStatuses"] = self._statuses(
                p, {"waiting": {"reason": reason, "message": message}}
            )

        self._update(mutate)

    def _finish(self, exit_code: int | None, reason: str | None, started: bool = True) -> None:
        """Write the terminal status, then complete a pending graceful deletion."""
        why = self.stopping
        if why == "lost" or why == "shutdown":
            return
        finished = now_iso()

        def mutate(p: dict[str, Any]) -> None:
            st = p.setdefault("status", {})
            if why == "evict":
                st["reason"] = "Evicted"
                st["message"] = self.message
                _condition(st, "DisruptionTarget", True, "TerminationByKubelet")
            elif why == "deadline":
                st["reason"] = "DeadlineExceeded"
                st["message"] = self.message
            if exit_code is None:
                # stopped before the process started: the containers stay waiting
                if why in ("delete", "evict", "deadline") and "containerStatuses" in st:
                    st["phase"] = "Failed"
                    _condition(st, "Ready", False, "PodFailed")
                    _condition(st, "ContainersReady", False, "PodFailed")
                return
            state = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": reason,
                    "startedAt": self.started_at if started else None,
                    "finishedAt": finished,
                    "containerID": f"fake://{self.uid}",
                }
            }
            message = (
                self.message if reason in ("StartError", "Error") and why not in ("evict", "deadline") else ""
            )
            if self.termination_message:
                # the runtime's message first, then what the container left (as the kubelet joins them)
                message = f"{message}: {self.termination_message}" if message else self.termination_message
            if message:
                state["terminated"]["message"] = message
            st["containerStatuses"] = self._statuses(p, state)
            st["phase"] = "Succeeded" if exit_code == 0 and why not in ("evict", "deadline") else "Failed"
            reason_ready = "PodCompleted" if st["phase"] == "Succeeded" else "PodFailed"
            _condition(st, "Ready", False, reason_ready)
            _condition(st, "ContainersReady", False, reason_ready)
            _condition(st, "PodReadyToStartContainers", False)

        pod = self._update(mutate)
        if pod is not None and why == "evict":
            self.kubelet.event(pod, "Evicted", self.message, "Warning")
        if pod is not None and meta(pod).get("deletionTimestamp"):
            with contextlib.suppress(Exception):
                self.kubelet.store.delete("pods", self.namespace, self.pod_name, grace=0)


class Kubelet:
    def __init__(self, store: Store, config: KubeletConfig, faults: Faults | None = None) -> None:
        self.store = store
        self.config = config
        self.faults = faults or Faults()
        self.restart_backoff_seconds = 1.0  # first CrashLoopBackOff delay (the real kubelet: 10 s)
        self.restart_backoff_max_seconds = 10.0  # cap (the real kubelet: 300 s)
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: Watcher | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._watcher = self.store.watch("pods", None, None)
        self._watcher.internal = True  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._loop, name="fake-kubelet", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        assert self._watcher is not None
        while not self._stop.is_set():
            try:
                item = self._watcher.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is CLOSE or item is ABORT:
                break
            etype, pod = item
            md, spec = meta(pod), pod.get("spec") or {}
            uid = md.get("uid")
            with self.lock:
                worker = self.workers.get(uid)
            if etype == "DELETED":
                if worker is not None:
                    worker.stop_pod("lost" if not md.get("deletionTimestamp") else "delete", 0)
                continue
            if worker is None:
                phase = (pod.get("status") or {}).get("phase")
                mine = spec.get("nodeName") in (None, "", NODE_NAME)
                if etype == "ADDED" and mine and phase == "Pending" and not md.get("deletionTimestamp"):
                    if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
                        continue
                    worker = PodWorker(self, pod)
                    with self.lock:
                        if self._stop.is_set():
                            break
                        self.workers[uid] = worker
                    worker.start()
                continue
            if md.get("deletionTimestamp"):
                worker.stop_pod("delete", float(md.get("deletionGracePeriodSeconds") or 0))

    def worker_done(self, worker: PodWorker) -> None:
        with self.lock:
            if self.workers.get(worker.uid) is worker:
                del self.workers[worker.uid]

    def worker_for(self, namespace: str, name: str) -> PodWorker | None:
        with self.lock:
            for w in self.workers.values():
                if w.namespace == namespace and w.pod_name == name:
                    return w
        return None

    def log_path(self, pod: dict[str, Any], container: str) -> Path:
        return self.config.root_dir / "pods" / meta(pod)["uid"] / f"{container}.log"

    # --- process setup ---------------------------------------------------------------------

    def _field(self, pod: dict[str, Any], path: str) -> str:
        md, spec, st = meta(pod), pod.get("spec") or {}, pod.get("status") or {}
        simple = {
            "metadata.name": md.get("name"),
            "metadata.namespace": md.get("namespace"),
            "metadata.uid": md.get("uid"),
            "spec.nodeName": spec.get("nodeName") or NODE_NAME,
            "spec.serviceAccountName": spec.get("serviceAccountName"),
            "status.podIP": st.get("podIP") or HOST_IP,
            "status.hostIP": st.get("hostIP") or HOST_IP,
            "status.podIPs": HOST_IP,
            "status.hostIPs": HOST_IP,
        }
        if path in simple:
            return str(simple[path] or "")
        m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
        if m:
            return str((md.get(m.group(1)) or {}).get(m.group(2), ""))
        raise ConfigError(f'unsupported fieldRef "{path}"')

    def command_for(self, pod: dict[str, Any], container: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        env = dict(self.config.base_env)
        env["HOSTNAME"] = meta(pod)["name"]
        own: dict[str, str] = {}
        for src in container.get("envFrom") or []:
            ref = src.get("configMapRef") or src.get("secretRef") or {}
            if not ref.get("optional"):
                what = "configmap" if "configMapRef" in src else "secret"
                raise ConfigError(f'{what} "{ref.get("name")}" not found')
        for item in container.get("env") or []:
            name = item["name"]
            if "valueFrom" in item:
                vf = item["valueFrom"] or {}
                if "fieldRef" in vf:
                    own[name] = self._field(pod, vf["fieldRef"].get("fieldPath", ""))
                else:
                    ref = vf.get("secretKeyRef") or vf.get("configMapKeyRef")
                    if ref is not None and ref.get("optional"):
                        continue
                    what = "secret" if "secretKeyRef" in vf else "configmap" if ref is not None else "source"
                    label = (ref or {}).get("name", "")
                    raise ConfigError(
                        f'{what} "{label}" not found' if ref is not None else f"{name}: unsupported"
                    )
            else:
                own[name] = expand(str(item.get("value", "")), {**own})
        env.update(own)
        entry = container.get("command")
        if entry is None:
            image = container.get("image", "")
            entry = next((e for p, e in self.config.image_entrypoints.items() if re.search(p, image)), [])
        argv = [expand(a, own) for a in [*(entry or []), *(container.get("args") or [])]]
        if not argv:
            raise StartError("no command specified")
        mapped = self.config.executable_map.get(argv[0])
        if mapped is not None:
            argv = [*([mapped] if isinstance(mapped, str) else mapped), *argv[1:]]
        if "/" not in argv[0]:
            search = os.pathsep.join([*self.config.path_prefix, env.get("PATH", os.defpath)])
            found = shutil.which(argv[0], path=search)
            if found is None:
                raise StartError(f'exec: "{argv[0]}": executable file not found in $PATH')
            argv[0] = found
        elif not os.access(argv[0], os.X_OK):
            raise StartError(f'exec: "{argv[0]}": stat {argv[0]}: no such file or directory')
        return argv, env

    # --- events, faults, shutdown ----------------------------------------------------------

    def event(self, pod: dict[str, Any], reason: str, message: str, etype: str = "Normal") -> None:
        md = meta(pod)
        stamp = now_iso()
        body = {
            "metadata": {"name": f"{md['name']}.{uuid.uuid4().hex[:16]}", "namespace": md["namespace"]},
            "involvedObject": {
                "kind": "Pod",
                "namespace": md["namespace"],
                "name": md["name"],
                "uid": md.get("uid"),
                "apiVersion": "v1",
                "resourceVersion": md.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "source": {
                "component": "default-scheduler"
                if reason in ("Scheduled", "FailedScheduling")
                else "kubelet",
                "host": NODE_NAME,
            },
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "type": etype,
            "reportingComponent": "kubelet",
            "reportingInstance": NODE_NAME,
        }
        with contextlib.suppress(Exception):
            self.store.create("events", md["namespace"], body)

    def evict(self, namespace: str, name: str, message: str | None = None) -> bool:
        worker = self.worker_for(namespace, name)
        if worker is None:
            return False
        worker.stop_pod("evict", 0, message or "The node was low on resource: memory. ")
        return True

    def lose(self, namespace: str | None = None, name: str | None = None) -> list[str]:
        """The node vanishes: its pods leave the store without a final status; processes are killed."""
        with self.lock:
            victims = [
                w
                for w in self.workers.values()
                if (namespace is None or w.namespace == namespace) and (name is None or w.pod_name == name)
            ]
        lost = []
        for w in victims:
            w.stop_pod("lost", 0)

            def force_delete(pod: dict[str, Any], uid: str = w.uid) -> dict[str, Any] | None:
                # what the pod garbage collector does for pods of a vanished node: a forced delete,
                # so the DELETED event carries deletionTimestamp but no terminal status
                if meta(pod).get("uid") != uid:
                    return None
                pod["metadata"].setdefault("deletionTimestamp", now_iso())
                pod["metadata"]["deletionGracePeriodSeconds"] = 0
                pod["metadata"].pop("finalizers", None)
                return pod

            self.store.internal_update("pods", w.namespace, w.pod_name, force_delete)
            lost.append(f"{w.namespace}/{w.pod_name}")
        return lost

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._watcher is not None:
            self.store.unwatch(self._watcher)
            self._watcher.queue.put(CLOSE)
        if self._thread is not None:
            self._thread.join(timeout)
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.stop_pod("shutdown", 0)
        deadline = time.monotonic() + timeout
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
            w.signal(signal.SIGKILL)  # in case the worker is somehow still alive
