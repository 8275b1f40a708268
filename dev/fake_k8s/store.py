"""The object store: resourceVersions, bounded event history, watchers."""

from __future__ import annotations

import contextlib
import copy
import queue
import random
import threading
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

from fake_k8s import errors
from fake_k8s.errors import FieldError
from fake_k8s.selectors import FieldSelector, LabelSelector
from fake_k8s.validation import default_pod, metadata_errors, pod_errors, pod_spec_update_errors

NAMESPACED = {"pods": True, "events": True, "namespaces": False}
KINDS = {"pods": "Pod", "events": "Event", "namespaces": "Namespace"}
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
CLOSE = object()  # put on a watcher's queue to end its stream cleanly
ABORT = object()  # ... or abruptly (connection dropped without the final chunk)


def now_iso(delta: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def with_rv(obj: dict[str, Any], rv: int) -> dict[str, Any]:
    out = dict(obj)
    out["metadata"] = {**meta(obj), "resourceVersion": str(rv)}
    return out


class Watcher:
    """One open watch: filters store events into its queue."""

    def __init__(
        self,
        resource: str,
        namespace: str | None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace and meta(obj).get("namespace") != self.namespace:
            return False
        if self.labels is not None and not self.labels.matches(meta(obj).get("labels")):
            return False
        return self.fields is None or self.fields.matches(obj)

    def convert(self, rv: int, resource: str, etype: str, obj: dict, old: dict | None):
        """The event this watcher sees for a store event, or None (mirrors the watch cache's filtering)."""
        if resource != self.resource:
            return None
        if etype == "ADDED":
            return ("ADDED", obj) if self.matches(obj) else None
        if etype == "DELETED":
            return ("DELETED", obj) if self.matches(obj) else None
        now_ok, was_ok = self.matches(obj), self.matches(old)
        if now_ok and was_ok:
            return ("MODIFIED", obj)
        if now_ok:
            return ("ADDED", obj)
        if was_ok and old is not None:
            return ("DELETED", with_rv(old, rv))
        return None

    def offer(self, rv: int, resource: str, etype: str, obj: dict, old: dict | None) -> None:
        ev = self.convert(rv, resource, etype, obj, old)
        if ev is not None:
            self.queue.put(ev)


class Store:
    def __init__(self, history_limit: int = 10000) -> None:
        self.lock = threading.RLock()
        self.rv = 0
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {r: {} for r in NAMESPACED}
        self.history: deque[tuple[int, str, str, dict, dict | None]] = deque()
        self.history_limit = history_limit
        self.history_start = 0  # every event with rv > history_start is retained
        self.watchers: set[Watcher] = set()
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create("namespaces", None, {"metadata": {"name": ns}})

    # --- internals -------------------------------------------------------------------------

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _emit(self, rv: int, resource: str, etype: str, obj: dict, old: dict | None) -> None:
        self.history.append((rv, resource, etype, obj, old))
        while len(self.history) > self.history_limit:
            self.history_start = self.history.popleft()[0]
        for w in list(self.watchers):
            w.offer(rv, resource, etype, obj, old)
        if resource == "pods" and etype == "DELETED":
            self._reap_namespace(meta(obj).get("namespace"))

    @staticmethod
    def _key(resource: str, namespace: str | None, name: str) -> tuple[str, str]:
        return (namespace or "" if NAMESPACED[resource] else "", name)

    def _require_namespace(self, namespace: str | None, resource: str = "", name: str = "") -> None:
        ns = self.objects["namespaces"].get(("", namespace or ""))
        if namespace and ns is None:
            raise errors.not_found("namespaces", namespace)
        if resource and ns is not None and meta(ns).get("deletionTimestamp"):
            raise errors.ApiError(
                403,
                "Forbidden",
                f'{resource} "{name}" is forbidden: unable to create new content in namespace {namespace} '
                "because it is being terminated",
                {"name": name, "kind": resource},
            )

    def _reap_namespace(self, namespace: str | None) -> None:
        """Remove a terminating namespace once nothing is left in it."""
        ns = self.objects["namespaces"].get(("", namespace or ""))
        if ns is None or not meta(ns).get("deletionTimestamp"):
            return
        if any(k[0] == namespace for k in self.objects["pods"]):
            return
        for key in [k for k in self.objects["events"] if k[0] == namespace]:
            self.remove("events", namespace, key[1])
        self.remove("namespaces", None, namespace or "")

    # --- reads -----------------------------------------------------------------------------

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.objects[resource].get(self._key(resource, namespace, name))
            if obj is None:
                raise errors.not_found(resource, name)
            return obj

    def list(
        self,
        resource: str,
        namespace: str | None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
        at_rv: int | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Matching objects (at ``at_rv`` when given, rebuilt from history) and the list's resourceVersion."""
        w = Watcher(resource, namespace, labels, fields)
        with self.lock:
            objs = dict(self.objects[resource])
            rv = self.rv
            if at_rv is not None and at_rv != rv:
                if at_rv < self.history_start:
                    raise errors.gone(f"too old resource version: {at_rv} ({self.history_start + 1})")
                for erv, eres, etype, obj, old in reversed(self.history):
                    if erv <= at_rv:
                        break
                    if eres != resource:
                        continue
                    key = self._key(resource, meta(obj).get("namespace"), meta(obj)["name"])
                    if etype == "ADDED":
                        objs.pop(key, None)
                    else:
                        objs[key] = old if old is not None else obj
                rv = at_rv
        items = [o for _, o in sorted(objs.items()) if w.matches(o)]
        return items, rv

    def watch(
        self,
        resource: str,
        namespace: str | None,
        since: int | None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
    ) -> Watcher:
        """Register a watcher; its queue starts with the initial or replayed events (or a 410 ERROR)."""
        w = Watcher(resource, namespace, labels, fields)
        with self.lock:
            if since is None:
                for _, obj in sorted(self.objects[resource].items()):
                    if w.matches(obj):
                        w.queue.put(("ADDED", obj))
            elif since < self.history_start:
                status = errors.gone(f"too old resource version: {since} ({self.history_start + 1})").status()
                status.pop("details", None)
                w.queue.put(("ERROR", status))
                w.queue.put(CLOSE)
                return w
            else:
                for erv, eres, etype, obj, old in self.history:
                    if erv > since:
                        w.offer(erv, eres, etype, obj, old)
            self.watchers.add(w)
        return w

    def unwatch(self, w: Watcher) -> None:
        with self.lock:
            self.watchers.discard(w)

    # --- writes ----------------------------------------------------------------------------

    def create(self, resource: str, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        obj["kind"] = KINDS[resource]
        obj["apiVersion"] = "v1"
        md = obj.setdefault("metadata", {})
        if not isinstance(md, dict):
            raise errors.bad_request("metadata must be an object")
        if NAMESPACED[resource]:
            if md.get("namespace") and md["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            md["namespace"] = namespace
        else:
            md.pop("namespace", None)
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp"):
            md.pop(key, None)
        md.pop("deletionGracePeriodSeconds", None)
        if not md.get("name") and md.get("generateName"):
            md["name"] = md["generateName"][:58] + "".join(random.choices(_GENERATE_ALPHABET, k=5))
        name = md.get("name") or ""
        kind = KINDS[resource]
        if not name:
            raise errors.invalid(
                kind, "", [FieldError("Required", "metadata.name", None, "name or generateName is required")]
            )
        if resource == "pods":
            obj.pop("status", None)
            default_pod(obj)
            errs = pod_errors(obj)
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif resource == "namespaces":
            errs = metadata_errors(md, namespaced=False)
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
            md.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        else:
            errs = metadata_errors(md, namespaced=True)
        with self.lock:
            if NAMESPACED[resource]:
                self._require_namespace(namespace, resource, name)
            if errs:
                raise errors.invalid(kind, name, errs)
            key = self._key(resource, namespace, name)
            if key in self.objects[resource]:
                if body.get("metadata", {}).get("generateName") and not body.get("metadata", {}).get("name"):
                    raise errors.ApiError(
                        409,
                        "AlreadyExists",
                        f'{resource} "{name}" already exists, the server was not able to generate a unique '
                        "name for the object",
                        {"name": name, "kind": resource, "retryAfterSeconds": 1},
                    )
                raise errors.already_exists(resource, name)
            rv = self._next_rv()
            md["uid"] = str(uuid.uuid4())
            md["resourceVersion"] = str(rv)
            md["creationTimestamp"] = now_iso()
            self.objects[resource][key] = obj
            self._emit(rv, resource, "ADDED", obj, None)
            return obj

    def update(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        mutate: Any,
        *,
        subresource: str | None = None,
        require_rv: bool = False,
    ) -> dict[str, Any]:
        """Replace an object with ``mutate(copy_of_current)``, enforcing what the server enforces."""
        with self.lock:
            key = self._key(resource, namespace, name)
            old = self.objects[resource].get(key)
            if old is None:
                raise errors.not_found(resource, name)
            new = mutate(copy.deepcopy(old))
            if not isinstance(new, dict):
                raise errors.bad_request("the body of the request must be an object")
            md = new.get("metadata")
            if not isinstance(md, dict):
                raise errors.bad_request("metadata must be an object")
            if md.get("name") != name:
                raise errors.bad_request(
                    f"the name of the object ({md.get('name')}) does not match the name on the URL ({name})"
                )
            if NAMESPACED[resource] and md.get("namespace", namespace) != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            rv_given = md.get("resourceVersion")
            if rv_given in (None, "") and require_rv and resource == "pods":
                raise errors.invalid(
                    KINDS[resource],
                    name,
                    [
                        FieldError(
                            "Invalid", "metadata.resourceVersion", "0x0", "must be specified for an update"
                        )
                    ],
                )
            if rv_given not in (None, "") and rv_given != meta(old).get("resourceVersion"):
                raise errors.conflict(resource, name)
            if md.get("uid") and md["uid"] != meta(old).get("uid"):
                raise errors.conflict(
                    resource,
                    name,
                    f"Precondition failed: UID in precondition: {md['uid']}, UID in object meta: "
                    f"{meta(old).get('uid')}",
                )
            new["kind"], new["apiVersion"] = old["kind"], old["apiVersion"]
            md["namespace"] = meta(old).get("namespace")
            if not NAMESPACED[resource]:
                md.pop("namespace", None)
            for k in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generateName",
            ):
                if k in meta(old):
                    md[k] = meta(old)[k]
                else:
                    md.pop(k, None)
            if subresource == "status":
                new = {**old, "status": new.get("status", old.get("status"))}
                new["metadata"] = dict(meta(old))
            else:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            kind = KINDS[resource]
            if resource == "pods":
                if subresource != "status":
                    default_pod(new)
                errs = pod_errors(new)
                if subresource != "status":
                    errs += pod_spec_update_errors(old.get("spec") or {}, new.get("spec") or {})
                if errs:
                    raise errors.invalid(kind, name, errs)
            else:
                errs = metadata_errors(md, namespaced=NAMESPACED[resource])
                if errs:
                    raise errors.invalid(kind, name, errs)
            return self._commit(resource, key, old, new)

    def _commit(self, resource: str, key: tuple[str, str], old: dict, new: dict) -> dict[str, Any]:
        strip = {"resourceVersion"}
        if {k: v for k, v in meta(new).items() if k not in strip} == {
            k: v for k, v in meta(old).items() if k not in strip
        } and {k: v for k, v in new.items() if k != "metadata"} == {
            k: v for k, v in old.items() if k != "metadata"
        }:
            return old  # a no-op write does not bump the resourceVersion
        rv = self._next_rv()
        new = with_rv(new, rv)
        md = meta(new)
        if (
            md.get("deletionTimestamp")
            and md.get("deletionGracePeriodSeconds") == 0
            and not md.get("finalizers")
        ):
            del self.objects[resource][key]
            self._emit(rv, resource, "DELETED", new, old)
            return new
        self.objects[resource][key] = new
        self._emit(rv, resource, "MODIFIED", new, old)
        return new

    def internal_update(self, resource: str, namespace: str | None, name: str, mutate: Any) -> dict | None:
        """Write without the client-facing checks (kubelet/scheduler). None when the object is gone."""
        with self.lock:
            key = self._key(resource, namespace, name)
            old = self.objects[resource].get(key)
            if old is None:
                return None
            new = mutate(copy.deepcopy(old))
            if new is None:
                return old
            return self._commit(resource, key, old, new)

    def delete(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        grace: int | None = None,
        preconditions: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        with self.lock:
            key = self._key(resource, namespace, name)
            obj = self.objects[resource].get(key)
            if obj is None:
                raise errors.not_found(resource, name)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != meta(obj).get("uid"):
                raise errors.conflict(
                    resource,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                    f"{meta(obj).get('uid')}",
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta(obj).get("resourceVersion"):
                raise errors.conflict(
                    resource,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                    f"ResourceVersion in object meta: {meta(obj).get('resourceVersion')}",
                )
            if resource == "namespaces":
                return self._delete_namespace(name, obj)
            if grace is not None and grace < 0:
                grace = 1
            period = 0
            if resource == "pods":
                spec, status = obj.get("spec") or {}, obj.get("status") or {}
                period = grace if grace is not None else int(spec.get("terminationGracePeriodSeconds") or 0)
                if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
                    period = 0
            md = meta(obj)
            if md.get("deletionTimestamp"):
                current = md.get("deletionGracePeriodSeconds") or 0
                if period >= current:
                    return obj
            if period == 0 and not md.get("finalizers"):
                rv = self._next_rv()
                gone = with_rv(obj, rv)
                del self.objects[resource][key]
                self._emit(rv, resource, "DELETED", gone, obj)
                return gone

            def mark(o: dict[str, Any]) -> dict[str, Any]:
                o["metadata"]["deletionTimestamp"] = now_iso(period)
                o["metadata"]["deletionGracePeriodSeconds"] = period
                return o

            return self._commit(resource, key, obj, mark(copy.deepcopy(obj)))

    def _delete_namespace(self, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        if name in ("default", "kube-system", "kube-public"):
            raise errors.ApiError(
                403,
                "Forbidden",
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                {"name": name, "kind": "namespaces"},
            )
        if meta(obj).get("deletionTimestamp"):
            return obj

        def terminating(o: dict[str, Any]) -> dict[str, Any]:
            o["metadata"]["deletionTimestamp"] = now_iso()
            o["status"] = {"phase": "Terminating"}
            return o

        # the "kubernetes" finalizer (spec.finalizers) holds it until its content is gone
        marked = self._commit("namespaces", ("", name), obj, terminating(copy.deepcopy(obj)))
        for key in [k for k in self.objects["pods"] if k[0] == name]:
            with contextlib.suppress(errors.ApiError):
                self.delete("pods", name, key[1])
        self._reap_namespace(name)
        return marked

    def remove(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """Drop an object at once (no grace, finalizers ignored), emitting DELETED."""
        with self.lock:
            key = self._key(resource, namespace, name)
            obj = self.objects[resource].pop(key, None)
            if obj is None:
                return None
            rv = self._next_rv()
            gone = with_rv(obj, rv)
            self._emit(rv, resource, "DELETED", gone, obj)
            return gone

    # --- faults ----------------------------------------------------------------------------

    def compact(self) -> int:
        """Forget the event history: watches from any earlier resourceVersion get 410 Expired."""
        with self.lock:
            self.history.clear()
            self.history_start = self.rv
            return self.rv

    def close_watches(self, abrupt: bool = False) -> int:
        with self.lock:
            victims = [w for w in self.watchers if not getattr(w, "internal", False)]
            for w in victims:
                w.queue.put(ABORT if abrupt else CLOSE)
                self.watchers.discard(w)
            return len(victims)
