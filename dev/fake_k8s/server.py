"""The HTTP front: routes, query parsing, watch and log streaming."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from fake_k8s import errors
from fake_k8s.errors import ApiError
from fake_k8s.patch import json_patch, merge_patch, strategic_merge_patch
from fake_k8s.selectors import parse_field_selector, parse_label_selector
from fake_k8s.store import ABORT, CLOSE, KINDS, NAMESPACED, meta

if TYPE_CHECKING:
    from fake_k8s.cluster import FakeCluster

SERVER_VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_VERBS_FULL = ["create", "delete", "get", "list", "patch", "update", "watch"]
API_RESOURCES = {
    "kind": "APIResourceList",
    "groupVersion": "v1",
    "resources": [
        {"name": "namespaces", "singularName": "namespace", "namespaced": False, "kind": "Namespace",
         "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"], "shortNames": ["ns"]},
        {"name": "namespaces/status", "singularName": "", "namespaced": False, "kind": "Namespace",
         "verbs": ["get"]},
        {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "verbs": _VERBS_FULL,
         "shortNames": ["po"], "categories": ["all"]},
        {"name": "pods/status", "singularName": "", "namespaced": True, "kind": "Pod",
         "verbs": ["get", "patch", "update"]},
        {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
        {"name": "pods/eviction", "singularName": "", "namespaced": True, "group": "policy", "version": "v1",
         "kind": "Eviction", "verbs": ["create"]},
        {"name": "events", "singularName": "event", "namespaced": True, "kind": "Event",
         "verbs": _VERBS_FULL, "shortNames": ["ev"]},
    ],
}  # fmt: skip

_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False", ""}

_ROUTE = re.compile(
    r"^/api/v1(?P<watch>/watch)?"
    r"(?:/namespaces/(?P<ns>[^/]+)(?=/(?:pods|events)(?:/|$)))?"
    r"/(?P<resource>[a-z]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[a-z]+))?/?$"
)


def _not_routed() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def _bool(query: dict[str, str], key: str) -> bool:
    value = query.get(key, "")
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise errors.bad_request(f'invalid value for {key}: strconv.ParseBool: parsing "{value}": invalid syntax')


def _int(query: dict[str, str], key: str) -> int | None:
    if key not in query or query[key] == "":
        return None
    try:
        return int(query[key])
    except ValueError:
        raise errors.bad_request(
            f'invalid value for {key}: strconv.ParseInt: parsing "{query[key]}": invalid syntax'
        ) from None


def _partial(obj: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta(obj)}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ApiServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # --- plumbing --------------------------------------------------------------------------

    def _send_json(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        raw = self._raw_body
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise errors.bad_request(f"error decoding request body: {exc}") from None

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def _dispatch(self, method: str) -> None:
        # read the whole body up front, so an early error never leaves bytes on a kept-alive connection
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        self._raw_body = self.rfile.read(length) if length > 0 else b""
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            self._route(method, url.path, query)
        except ApiError as exc:
            self._send_json(exc.code, exc.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - a bug in the fake: answer 500 like the real server
            self._send_json(500, ApiError(500, "InternalError", f"fake_k8s internal error: {exc!r}").status())

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # --- routing ---------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str]) -> None:
        cluster = self.server.cluster
        if path.startswith("/_fake/"):
            body = self._body() if method in ("POST", "PUT") else None
            code, result = cluster.control(method, path[len("/_fake/") :], body or {})
            self._send_json(code, result)
            return
        simple = {
            "/version": SERVER_VERSION,
            "/api": {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
            },
            "/api/v1": API_RESOURCES,
            "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
        }
        if path.rstrip("/") in simple or path == "/":
            if method != "GET":
                raise errors.method_not_allowed()
            self._send_json(200, simple.get(path.rstrip("/"), {"paths": sorted(simple)}))
            return
        if path in ("/healthz", "/livez", "/readyz"):
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(data)
            return
        m = _ROUTE.match(path)
        if not m or m["resource"] not in KINDS:
            raise _not_routed()
        resource, ns, name, sub = m["resource"], m["ns"], m["name"], m["sub"]
        if resource == "namespaces" and name is None and m["ns"]:
            raise _not_routed()
        if not NAMESPACED[resource] and ns:
            raise _not_routed()
        if m["watch"]:
            if method != "GET" or sub:
                raise _not_routed()
            query = {**query, "watch": "true"}
            if name:
                query["fieldSelector"] = ",".join(
                    filter(None, [query.get("fieldSelector"), f"metadata.name={name}"])
                )
                name = None
        if name is None:
            if sub:
                raise _not_routed()
            if method == "GET":
                self._list(resource, ns, query)
            elif method == "POST":
                body = self._body()
                if not isinstance(body, dict):
                    raise errors.bad_request("the body of the request must be a JSON object")
                self._check_kind(resource, body)
                if NAMESPACED[resource] and not ns:
                    raise errors.method_not_allowed()
                obj = cluster.store.create(resource, ns, body)
                self._send_json(201, obj)
            else:
                raise errors.method_not_allowed()
            return
        if sub is None:
            self._item(method, resource, ns, name, query)
        elif sub == "status" and resource in ("pods", "namespaces"):
            self._item(method, resource, ns, name, query, subresource="status")
        elif sub == "log" and resource == "pods" and method == "GET":
            self._log(ns, name, query)
        elif sub == "eviction" and resource == "pods" and method == "POST":
            body = self._body() or {}
            opts = body.get("deleteOptions") or {}
            cluster.store.delete("pods", ns, name, opts.get("gracePeriodSeconds"), opts.get("preconditions"))
            self._send_json(
                201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
            )
        else:
            raise _not_routed() if sub not in ("status", "log", "eviction") else errors.method_not_allowed()

    @staticmethod
    def _check_kind(resource: str, body: dict[str, Any]) -> None:
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if kind and kind != KINDS[resource]:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version (v1)"
                if api_version not in (None, "v1")
                else f'{kind} in version "v1" cannot be handled as a {KINDS[resource]}: the object kind does '
                f"not match the URL ({KINDS[resource]})"
            )
        if api_version and api_version != "v1":
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version (v1)"
            )

    # --- collections -----------------------------------------------------------------------

    def _rv(self, query: dict[str, str]) -> int | None:
        raw = query.get("resourceVersion", "")
        if raw == "":
            return None
        try:
            value = int(raw)
        except ValueError:
            raise errors.bad_request(f"invalid resource version: {raw}") from None
        if value < 0:
            raise errors.bad_request(f"invalid resource version: {raw}")
        return value

    def _list(self, resource: str, ns: str | None, query: dict[str, str]) -> None:
        store = self.server.cluster.store
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"), resource)
        rv = self._rv(query)
        partial = "as=PartialObjectMetadata" in (self.headers.get("Accept") or "")
        if _bool(query, "watch"):
            self._watch(resource, ns, query, rv, labels, fields, partial)
            return
        match = query.get("resourceVersionMatch", "")
        if match and rv is None:
            raise ApiError(
                422,
                "Invalid",
                'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: '
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
                {"kind": "ListOptions", "group": "meta.k8s.io"},
            )
        if match not in ("", "NotOlderThan", "Exact"):
            raise ApiError(
                422,
                "Invalid",
                f'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Unsupported value: "{match}": '
                'supported values: "Exact", "NotOlderThan"',
                {"kind": "ListOptions", "group": "meta.k8s.io"},
            )
        if rv is not None and rv > store.rv:
            raise ApiError(
                504,
                "Timeout",
                f"Too large resource version: {rv}, current: {store.rv}",
                {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                 "retryAfterSeconds": 1},
            )  # fmt: skip
        at = rv if match == "Exact" and rv else None
        items, list_rv = store.list(resource, ns, labels, fields, at_rv=at)
        if partial:
            body = {
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": str(list_rv)},
                "items": [_partial(o) for o in items],
            }
            self._send_json(200, body, "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")
            return
        body = {
            "kind": f"{KINDS[resource]}List",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(list_rv)},
            "items": items,
        }
        self._send_json(200, body)

    def _watch(self, resource, ns, query, rv, labels, fields, partial) -> None:
        server, store = self.server, self.server.cluster.store
        timeout = _int(query, "timeoutSeconds")
        if timeout is None or timeout <= 0:
            timeout = 1800
        bookmarks = query.get("allowWatchBookmarks") in _TRUE
        watcher = store.watch(resource, ns, rv if rv else None, labels, fields)
        server.streams_open(+1)
        deadline = time.monotonic() + timeout
        last_write = time.monotonic()
        abrupt = False
        kind = KINDS[resource]
        try:
            self._start_stream("application/json")
            while not server.stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = watcher.queue.get(timeout=min(left, 0.25))
                except queue.Empty:
                    if self._client_gone():
                        abrupt = True
                        break
                    if bookmarks and time.monotonic() - last_write >= server.bookmark_interval:
                        with store.lock:
                            if watcher.queue.empty():
                                marker = {"kind": kind, "apiVersion": "v1",
                                          "metadata": {"resourceVersion": str(store.rv)}}  # fmt: skip
                                self._chunk(
                                    json.dumps({"type": "BOOKMARK", "object": marker}).encode() + b"\n"
                                )
                                last_write = time.monotonic()
                    continue
                if item is CLOSE:
                    break
                if item is ABORT:
                    abrupt = True
                    break
                etype, obj = item
                if partial and etype != "ERROR":
                    obj = _partial(obj)
                self._chunk(json.dumps({"type": etype, "object": obj}).encode() + b"\n")
                last_write = time.monotonic()
            if abrupt:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
            else:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
        except OSError:
            self.close_connection = True
        finally:
            store.unwatch(watcher)
            server.streams_open(-1)

    # --- single objects --------------------------------------------------------------------

    def _item(self, method, resource, ns, name, query, subresource=None) -> None:
        store = self.server.cluster.store
        if method == "GET":
            obj = store.get(resource, ns, name)
            if "as=PartialObjectMetadata" in (self.headers.get("Accept") or ""):
                self._send_json(
                    200, _partial(obj), "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
                )
            else:
                self._send_json(200, obj)
            return
        if method == "PUT":
            body = self._body()
            if not isinstance(body, dict):
                raise errors.bad_request("the body of the request must be a JSON object")
            self._check_kind(resource, body)
            obj = store.update(
                resource, ns, name, lambda _old: body, subresource=subresource, require_rv=True
            )
            self._send_json(200, obj)
            return
        if method == "PATCH":
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            body = self._body()
            if ctype == "application/json-patch+json":
                apply = lambda old: json_patch(old, body)
            elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                if not isinstance(body, dict):
                    raise errors.bad_request("the body of the request must be a JSON object")
                fn = merge_patch if ctype == "application/merge-patch+json" else strategic_merge_patch
                apply = lambda old: fn(old, body)
            else:
                raise errors.unsupported_media_type(ctype)
            obj = store.update(resource, ns, name, apply, subresource=subresource)
            self._send_json(200, obj)
            return
        if method == "DELETE" and subresource is None:
            opts = self._body() or {}
            grace = _int(query, "gracePeriodSeconds")
            if opts.get("gracePeriodSeconds") is not None:
                grace = int(opts["gracePeriodSeconds"])
            if query.get("dryRun") == "All":
                self._send_json(200, store.get(resource, ns, name))
                return
            obj = store.delete(resource, ns, name, grace, opts.get("preconditions"))
            self._send_json(200, obj)
            return
        raise errors.method_not_allowed()

    # --- logs ------------------------------------------------------------------------------

    def _log(self, ns: str, name: str, query: dict[str, str]) -> None:
        cluster = self.server.cluster
        pod = cluster.store.get("pods", ns, name)
        containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
        container = query.get("container") or ""
        if not container:
            if len(containers) != 1:
                raise errors.bad_request(
                    f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
                )
            container = containers[0]
        if container not in containers:
            raise errors.bad_request(f"container {container} is not valid for pod {name}")
        status = next(
            (
                c
                for c in (pod.get("status") or {}).get("containerStatuses") or []
                if c.get("name") == container
            ),
            {},
        )
        state, last = status.get("state") or {}, (status.get("lastState") or {}).get("terminated")
        if _bool(query, "previous"):
            if not last:
                raise errors.bad_request(
                    f'previous terminated container "{container}" in pod "{name}" not found'
                )
        elif not state.get("running") and not state.get("terminated") and not last:
            reason = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
            reason = {
                "ErrImagePull": "image can't be pulled",
                "ImagePullBackOff": "trying and failing to pull image",
            }.get(reason, reason)
            raise errors.bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        path = cluster.kubelet.log_path(pod, container)
        tail = _int(query, "tailLines")
        limit = _int(query, "limitBytes")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        if tail is not None:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-tail:]) if tail > 0 else b""
        if limit is not None and limit > 0:
            data = data[:limit]
        if not _bool(query, "follow"):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        uid = meta(pod)["uid"]
        sent = len(data)
        offset = path.stat().st_size if path.exists() else 0
        try:
            self._start_stream("text/plain")
            if data:
                self._chunk(data)
            while not self.server.stopping.is_set():
                worker = cluster.kubelet.worker_for(ns, name)
                running = worker is not None and worker.uid == uid and not worker.exited.is_set()
                with contextlib.suppress(FileNotFoundError), open(path, "rb") as fh:
                    fh.seek(offset)
                    more = fh.read()
                if more:
                    if limit:
                        more = more[: max(0, limit - sent)]
                    offset += len(more)
                    sent += len(more)
                    if more:
                        self._chunk(more)
                if (limit and sent >= limit) or (not running and not more) or self._client_gone():
                    break
                time.sleep(0.1)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # concurrent pod creation opens many connections at once

    def __init__(self, cluster: FakeCluster, port: int = 0, bookmark_interval: float = 5.0) -> None:
        self.cluster = cluster
        self.stopping = threading.Event()
        self.bookmark_interval = bookmark_interval
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._streams = 0
        self._streams_idle = threading.Condition(self._conns_lock)
        super().__init__(("127.0.0.1", port), Handler)

    def process_request(self, request, client_address) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def streams_open(self, delta: int) -> None:
        with self._streams_idle:
            self._streams += delta
            self._streams_idle.notify_all()

    def wait_streams_closed(self, timeout: float) -> bool:
        with self._streams_idle:
            return self._streams_idle.wait_for(lambda: self._streams == 0, timeout)

    def close_all(self) -> None:
        self.stopping.set()
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
