"""``FakeCluster``: the API server and the process kubelet, started and stopped together."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import urllib.request
from pathlib import Path
from typing import Any, Self

from fake_k8s.errors import ApiError
from fake_k8s.kubelet import Faults, Kubelet, KubeletConfig
from fake_k8s.server import ApiServer
from fake_k8s.store import Store

_FAULT_FIELDS = set(Faults().as_dict())


def default_base_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"}


class FakeCluster:
    """A fake Kubernetes API server on 127.0.0.1 plus a kubelet that runs pods as local processes.

    ``base_env``: environment every pod process starts from (default: PATH and LANG only).
    ``executable_map``: argv[0] -> path (or argv prefix list), e.g. ``{"python": "/venv/bin/python"}``.
    ``python_exe``: shorthand mapping ``python`` and ``python3`` to that interpreter.
    ``path_prefix``: directories searched before the pod's PATH when resolving argv[0].
    ``image_entrypoints``: image regex -> ENTRYPOINT used when a container has no ``command``.
    ``history_limit``: watch events kept for resuming watches (older resourceVersions get 410).
    ``bookmark_interval``: idle seconds before a BOOKMARK on watches that allow them.
    ``restart_backoff_seconds``: first CrashLoopBackOff delay (doubles, capped at 10 s).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        base_env: dict[str, str] | None = None,
        executable_map: dict[str, str | list[str]] | None = None,
        python_exe: str | None = None,
        path_prefix: list[str] | None = None,
        image_entrypoints: dict[str, list[str]] | None = None,
        history_limit: int = 10000,
        root_dir: str | os.PathLike[str] | None = None,
        bookmark_interval: float = 5.0,
        restart_backoff_seconds: float = 1.0,
    ) -> None:
        self.port = port
        self._own_root = root_dir is None
        self.root_dir = Path(root_dir) if root_dir else Path(tempfile.mkdtemp(prefix="fake-k8s-"))
        executables = dict(executable_map or {})
        if python_exe:
            executables.setdefault("python", python_exe)
            executables.setdefault("python3", python_exe)
        self.store = Store(history_limit=history_limit)
        self.faults = Faults()
        self.kubelet = Kubelet(
            self.store,
            KubeletConfig(
                root_dir=self.root_dir,
                base_env=dict(base_env) if base_env is not None else default_base_env(),
                executable_map=executables,
                path_prefix=list(path_prefix or []),
                image_entrypoints=dict(image_entrypoints or {}),
            ),
            self.faults,
        )
        self.kubelet.restart_backoff_seconds = restart_backoff_seconds
        self._bookmark_interval = bookmark_interval
        self.server: ApiServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("the fake cluster is not started")
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Self:
        self.server = ApiServer(self, self.port, bookmark_interval=self._bookmark_interval)
        self.kubelet.start()
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.1,), name="fake-k8s-api")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Kill every pod process, close every watch and connection, stop serving."""
        self.kubelet.stop()
        if self.server is not None:
            # end the watch streams cleanly first (clients see a normal end of stream) ...
            self.store.close_watches()
            self.server.wait_streams_closed(2.0)
            # ... then drop every connection (idle keep-alive ones, log streams)
            self.server.close_all()
            self.server.shutdown()
            if self._thread is not None:
                self._thread.join(5)
            self.server.server_close()
            self.server.close_all()
        if self._own_root:
            shutil.rmtree(self.root_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}
            ],
            "current-context": "fake",
            "preferences": {},
        }

    def write_kubeconfig(self, path: str | os.PathLike[str], namespace: str = "default") -> Path:
        """Write a kubeconfig (JSON, which YAML loaders read) pointing at this server."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.kubeconfig(namespace), indent=2) + "\n")
        return target

    # --- fault knobs -----------------------------------------------------------------------

    def set_faults(self, **knobs: Any) -> dict[str, Any]:
        """Set ``image_pull_fail_pattern``, ``unschedulable_pattern``, ``slow_start_seconds``,
        ``image_pull_backoff_seconds``."""
        unknown = set(knobs) - _FAULT_FIELDS
        if unknown:
            raise ValueError(f"unknown fault knobs: {sorted(unknown)}")
        for key, value in knobs.items():
            if key in ("image_pull_fail_pattern", "unschedulable_pattern"):
                value = value or None
            elif value is not None:
                value = float(value)
            setattr(self.faults, key, value)
        return self.faults.as_dict()

    def evict(self, namespace: str, name: str, message: str | None = None) -> bool:
        """Node-pressure eviction: process killed, pod Failed with reason Evicted (it stays in the store)."""
        return self.kubelet.evict(namespace, name, message)

    def cut_watches(self, abrupt: bool = False) -> int:
        """End every open watch stream now (cleanly, or by dropping the connection); returns how many."""
        return self.store.close_watches(abrupt=abrupt)

    def compact(self) -> int:
        """Drop the event history; watching from any older resourceVersion then gets 410 Expired."""
        return self.store.compact()

    def lose_node(self, namespace: str | None = None, name: str | None = None) -> list[str]:
        """The node vanishes: its pods (or just one) disappear from the store with no final status."""
        return self.kubelet.lose(namespace, name)

    def pod_pid(self, namespace: str, name: str) -> int | None:
        worker = self.kubelet.worker_for(namespace, name)
        return worker.proc.pid if worker is not None and worker.proc is not None else None

    def control(self, method: str, action: str, body: dict[str, Any]) -> tuple[int, Any]:
        """The private ``/_fake/<action>`` HTTP endpoint."""
        try:
            if action == "faults" and method == "GET":
                return 200, self.faults.as_dict()
            if method != "POST":
                raise ApiError(405, "MethodNotAllowed", f"{method} /_fake/{action} is not supported")
            if action == "faults":
                return 200, self.set_faults(**body)
            if action == "evict":
                return 200, {"evicted": self.evict(body["namespace"], body["name"], body.get("message"))}
            if action == "cut-watches":
                return 200, {"closed": self.cut_watches(bool(body.get("abrupt")))}
            if action == "compact":
                return 200, {"resourceVersion": str(self.compact())}
            if action == "lose-node":
                return 200, {"lost": self.lose_node(body.get("namespace"), body.get("name"))}
            if action == "pid":
                return 200, {"pid": self.pod_pid(body["namespace"], body["name"])}
            raise ApiError(404, "NotFound", f"no fake control action {action!r}")
        except (KeyError, TypeError, ValueError) as exc:
            return 400, ApiError(400, "BadRequest", f"bad fake control request: {exc!r}").status()
        except ApiError as exc:
            return exc.code, exc.status()


class FakeClusterControl:
    """The fault knobs of a ``FakeCluster`` running elsewhere (e.g. ``python -m fake_k8s``), over HTTP."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _call(self, method: str, action: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body or {}).encode() if method == "POST" else None
        req = urllib.request.Request(
            f"{self.url}/_fake/{action}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def faults(self) -> dict[str, Any]:
        return self._call("GET", "faults")

    def set_faults(self, **knobs: Any) -> dict[str, Any]:
        return self._call("POST", "faults", knobs)

    def evict(self, namespace: str, name: str, message: str | None = None) -> bool:
        return self._call("POST", "evict", {"namespace": namespace, "name": name, "message": message})[
            "evicted"
        ]

    def cut_watches(self, abrupt: bool = False) -> int:
        return self._call("POST", "cut-watches", {"abrupt": abrupt})["closed"]

    def compact(self) -> int:
        return int(self._call("POST", "compact")["resourceVersion"])

    def lose_node(self, namespace: str | None = None, name: str | None = None) -> list[str]:
        return self._call("POST", "lose-node", {"namespace": namespace, "name": name})["lost"]

    def pod_pid(self, namespace: str, name: str) -> int | None:
        return self._call("POST", "pid", {"namespace": namespace, "name": name})["pid"]
