"""The fake Kubernetes API server and process kubelet, driven by the real ``kubernetes`` client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

kubernetes = pytest.importorskip("kubernetes")

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from fake_k8s import FakeCluster, FakeClusterControl

DEV = Path(__file__).resolve().parents[1]


@pytest.fixture
def cluster(tmp_path):
    with FakeCluster(python_exe=sys.executable, root_dir=tmp_path / "kubelet", bookmark_interval=0.5) as c:
        yield c


@pytest.fixture
def v1(cluster, tmp_path):
    path = cluster.write_kubeconfig(tmp_path / "kubeconfig")
    api_client = config.new_client_from_config(config_file=str(path))
    yield client.CoreV1Api(api_client)
    api_client.close()


def pod_body(name, command, *, labels=None, env=None, image="python:3.11-slim", generate=False, **spec):
    meta = {"generateName" if generate else "name": name, "labels": labels or {}}
    container = {"name": "base", "image": image, "command": command, "env": env or []}
    return {"metadata": meta, "spec": {"restartPolicy": "Never", "containers": [container], **spec}}


SLEEP = ["python", "-c", "import time; print('up', flush=True); time.sleep(60)"]


def wait_for(fn, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {fn}")
        time.sleep(interval)


def phase_is(v1, name, *phases, ns="default"):
    def check():
        pod = v1.read_namespaced_pod(name, ns)
        return pod if pod.status.phase in phases else None

    return check


def error_body(exc: ApiException) -> dict:
    return json.loads(exc.body)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# --- discovery, namespaces, CRUD ---------------------------------------------------------------


def test_discovery_and_namespaces(cluster, v1):
    assert client.VersionApi(v1.api_client).get_code().git_version.startswith("v1.")
    names = {n.metadata.name for n in v1.list_namespace().items}
    assert {"default", "kube-system"} <= names
    created = v1.create_namespace({"metadata": {"name": "team-a"}})
    assert created.status.phase == "Active"
    assert v1.read_namespace("team-a").metadata.uid == created.metadata.uid
    with pytest.raises(ApiException) as err:
        v1.create_namespace({"metadata": {"name": "team-a"}})
    assert (err.value.status, error_body(err.value)["reason"]) == (409, "AlreadyExists")
    with pytest.raises(ApiException) as err:
        v1.create_namespace({"metadata": {"name": "Bad_Name"}})
    assert (err.value.status, error_body(err.value)["reason"]) == (422, "Invalid")
    resources = v1.get_api_resources()
    assert {"pods", "pods/log", "pods/status", "namespaces"} <= {r.name for r in resources.resources}


def test_pod_crud_and_generate_name(cluster, v1):
    pod = v1.create_namespaced_pod("default", pod_body("app", SLEEP, labels={"a": "1"}))
    md = pod.metadata
    assert md.uid and md.creation_timestamp and int(md.resource_version) > 0
    assert pod.status.phase == "Pending" and pod.spec.termination_grace_period_seconds == 30
    generated = v1.create_namespaced_pod("default", pod_body("worker-", SLEEP, generate=True))
    assert (
        generated.metadata.name.startswith("worker-") and len(generated.metadata.name) == len("worker-") + 5
    )
    listed = v1.list_namespaced_pod("default")
    assert {p.metadata.name for p in listed.items} == {"app", generated.metadata.name}
    assert int(listed.metadata.resource_version) >= int(generated.metadata.resource_version)
    assert {p.metadata.name for p in v1.list_pod_for_all_namespaces(limit=1, _continue="").items} >= {"app"}

    patched = v1.patch_namespaced_pod("app", "default", {"metadata": {"labels": {"b": "2"}}})
    assert patched.metadata.labels == {"a": "1", "b": "2"}
    assert int(patched.metadata.resource_version) > int(md.resource_version)
    current = v1.read_namespaced_pod("app", "default")
    current.metadata.annotations = {"note": "x"}
    replaced = v1.replace_namespaced_pod("app", "default", current)
    assert replaced.metadata.annotations == {"note": "x"}
    # a stale resourceVersion on replace is a 409 Conflict
    with pytest.raises(ApiException) as err:
        v1.replace_namespaced_pod("app", "default", current)
    body = error_body(err.value)
    assert (err.value.status, body["reason"]) == (409, "Conflict")
    assert body["message"].startswith('Operation cannot be fulfilled on pods "app"')

    deleted = v1.delete_namespaced_pod(generated.metadata.name, "default", grace_period_seconds=0)
    assert deleted.metadata.name == generated.metadata.name
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_pod(generated.metadata.name, "default")
    assert err.value.status == 404


def test_patch_content_types_and_status_subresource(cluster, v1):
    v1.create_namespaced_pod("default", pod_body("p", SLEEP, labels={"a": "1", "b": "2"}))
    # a list body goes out as application/json-patch+json
    out = v1.patch_namespaced_pod(
        "p",
        "default",
        [
            {"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}},
            {"op": "remove", "path": "/metadata/labels/b"},
        ],
    )
    assert out.metadata.labels == {"a": "1"} and out.metadata.annotations == {"k": "v"}
    with pytest.raises(ApiException) as err:
        v1.patch_namespaced_pod("p", "default", [{"op": "remove", "path": "/metadata/labels/zzz"}])
    assert err.value.status == 422
    merged = v1.api_client.call_api(
        "/api/v1/namespaces/default/pods/p",
        "PATCH",
        header_params={"Content-Type": "application/merge-patch+json", "Accept": "application/json"},
        body={"metadata": {"labels": {"a": None, "c": "3"}}},
        response_types_map={200: "V1Pod"},
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
    )
    assert merged.metadata.labels == {"c": "3"}
    # strategic merge: containers merge by name, so an image-only patch is allowed
    out = v1.patch_namespaced_pod(
        "p", "default", {"spec": {"containers": [{"name": "base", "image": "py:2"}]}}
    )
    assert out.spec.containers[0].image == "py:2" and out.spec.containers[0].command == SLEEP
    status = v1.patch_namespaced_pod_status(
        "p", "default", {"status": {"conditions": [{"type": "Custom", "status": "True"}]}}
    )
    assert any(c.type == "Custom" for c in status.status.conditions)
    assert v1.read_namespaced_pod_status("p", "default").metadata.name == "p"


# --- what the real server rejects ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (pod_body("Bad_Name", SLEEP), "metadata.name", "FieldValueInvalid"),
        (pod_body("x" * 254, SLEEP), "metadata.name", "FieldValueInvalid"),
        ({"metadata": {"name": "x"}, "spec": {"containers": []}}, "spec.containers", "FieldValueRequired"),
        (pod_body("x", SLEEP, labels={"k": "v" * 64}), "metadata.labels", "FieldValueInvalid"),
        (pod_body("x", SLEEP, labels={"bad key!": "v"}), "metadata.labels", "FieldValueInvalid"),
        (pod_body("x", SLEEP, labels={"example.com/k": "-v"}), "metadata.labels", "FieldValueInvalid"),
        (
            {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "a", "image": "i"}] * 2}},
            "spec.containers[1].name",
            "FieldValueDuplicate",
        ),
        ({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "a"}]}}, "spec.containers[0].image", "FieldValueRequired"),
        ({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "A_", "image": "i"}]}}, "spec.containers[0].name", "FieldValueInvalid"),
        (
            {"metadata": {"name": "x", "annotations": {"big": "v" * (256 * 1024)}}, "spec": pod_body("x", SLEEP)["spec"]},
            "metadata.annotations",
            "FieldValueTooLong",
        ),
        ({"metadata": {}, "spec": pod_body("x", SLEEP)["spec"]}, "metadata.name", "FieldValueRequired"),
    ],
)  # fmt: skip
def test_invalid_pods_are_422(v1, body, field, reason):
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_pod("default", body)
    status = error_body(err.value)
    assert err.value.status == 422
    assert status["kind"] == "Status" and status["apiVersion"] == "v1" and status["status"] == "Failure"
    assert status["reason"] == "Invalid" and status["code"] == 422
    assert status["details"]["kind"] == "Pod"
    assert (field, reason) in {(c["field"], c["reason"]) for c in status["details"]["causes"]}
    assert " is invalid: " in status["message"]


def test_not_found_conflicts_and_immutability(v1):
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_pod("ghost", "default")
    assert err.value.status == 404
    assert error_body(err.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "ghost" not found',
        "reason": "NotFound",
        "details": {"name": "ghost", "kind": "pods"},
        "code": 404,
    }
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_pod("nowhere", pod_body("x", SLEEP))
    assert (err.value.status, error_body(err.value)["message"]) == (404, 'namespaces "nowhere" not found')
    with pytest.raises(ApiException) as err:
        v1.delete_namespaced_pod("ghost", "default")
    assert err.value.status == 404

    v1.create_namespaced_pod("default", pod_body("x", SLEEP, activeDeadlineSeconds=600))
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_pod("default", pod_body("x", SLEEP))
    body = error_body(err.value)
    assert (err.value.status, body["reason"], body["message"]) == (
        409,
        "AlreadyExists",
        'pods "x" already exists',
    )
    for bad_patch in (
        {"spec": {"restartPolicy": "Always"}},
        {"spec": {"containers": [{"name": "base", "command": ["sh"]}]}},
        {"spec": {"activeDeadlineSeconds": 900}},
    ):
        with pytest.raises(ApiException) as err:
            v1.patch_namespaced_pod("x", "default", bad_patch)
        assert (err.value.status, error_body(err.value)["reason"]) == (422, "Invalid"), bad_patch
    assert (
        v1.patch_namespaced_pod(
            "x", "default", {"spec": {"activeDeadlineSeconds": 300}}
        ).spec.active_deadline_seconds
        == 300
    )
    tolerations = v1.read_namespaced_pod("x", "default").spec.tolerations
    extra = {"key": "k", "operator": "Exists", "effect": "NoSchedule"}
    wire = v1.api_client.sanitize_for_serialization(tolerations)
    out = v1.patch_namespaced_pod("x", "default", {"spec": {"tolerations": [*wire, extra]}})
    assert len(out.spec.tolerations) == len(tolerations) + 1
    with pytest.raises(ApiException) as err:
        v1.patch_namespaced_pod("x", "default", {"metadata": {"name": "y"}})
    assert err.value.status == 400
    with pytest.raises(ApiException) as err:
        v1.patch_namespaced_pod("x", "default", {"metadata": {"resourceVersion": "1", "labels": {"a": "b"}}})
    assert (err.value.status, error_body(err.value)["reason"]) == (409, "Conflict")
    with pytest.raises(ApiException) as err:
        v1.patch_namespaced_pod("x", "default", {"metadata": {"labels": {"a": "b" * 70}}})
    assert err.value.status == 422


def test_namespace_deletion(v1):
    v1.create_namespace({"metadata": {"name": "tmp"}})
    v1.create_namespaced_pod("tmp", pod_body("p", SLEEP))
    wait_for(phase_is(v1, "p", "Running", ns="tmp"))
    v1.delete_namespace("tmp")
    # content goes first, then the namespace itself
    wait_for(lambda: not v1.list_namespaced_pod("tmp").items)
    with pytest.raises(ApiException) as err:
        v1.read_namespace("tmp")
    assert err.value.status == 404
    with pytest.raises(ApiException) as err:
        v1.delete_namespace("default")
    assert (err.value.status, error_body(err.value)["reason"]) == (403, "Forbidden")


# --- selectors ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """One cluster with four unscheduled pods, shared by the (read-only) selector tests."""
    tmp = tmp_path_factory.mktemp("selectors")
    cluster = FakeCluster(root_dir=tmp / "kubelet").start()
    api_client = config.new_client_from_config(config_file=str(cluster.write_kubeconfig(tmp / "kubeconfig")))
    v1 = client.CoreV1Api(api_client)
    specs = {
        "p1": {"app": "web", "tier": "front", "n": "5"},
        "p2": {"app": "web", "tier": "back"},
        "p3": {"app": "db"},
        "p4": {},
    }
    for name, labels in specs.items():
        v1.create_namespaced_pod("default", pod_body(name, SLEEP, labels=labels, nodeName="other-node"))
    yield v1
    api_client.close()
    cluster.stop()


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", {"p1", "p2", "p3", "p4"}),
        ("app=web", {"p1", "p2"}),
        ("app==web", {"p1", "p2"}),
        ("app!=web", {"p3", "p4"}),
        ("app in (web, db)", {"p1", "p2", "p3"}),
        ("app notin (web)", {"p3", "p4"}),
        ("tier", {"p1", "p2"}),
        ("!tier", {"p3", "p4"}),
        ("app=web,tier!=back", {"p1"}),
        ("app in (web),!n", {"p2"}),
        ("n>3", {"p1"}),
    ],
)
def test_label_selectors(labelled, selector, expected):
    names = {p.metadata.name for p in labelled.list_namespaced_pod("default", label_selector=selector).items}
    assert names == expected


@pytest.mark.parametrize(
    "selector", ["app in web", "app=(x", "a b", "app in ()", "!", "app=web,", "k=" + "v" * 64]
)
def test_malformed_label_selector_is_400(labelled, selector):
    with pytest.raises(ApiException) as err:
        labelled.list_namespaced_pod("default", label_selector=selector)
    assert (err.value.status, error_body(err.value)["reason"]) == (400, "BadRequest")


def test_field_selectors(labelled):
    v1 = labelled

    def names(sel, ns=None):
        items = v1.list_pod_for_all_namespaces(field_selector=sel).items
        return {p.metadata.name for p in items}

    assert names("metadata.name=p2") == {"p2"}
    assert names("metadata.name!=p2,metadata.namespace==default") == {"p1", "p3", "p4"}
    assert names("status.phase=Pending,spec.nodeName=other-node") == {"p1", "p2", "p3", "p4"}
    assert names("status.phase!=Pending") == set()
    for bad in ("foo.bar=1", "metadata.name"):
        with pytest.raises(ApiException) as err:
            v1.list_namespaced_pod("default", field_selector=bad)
        assert err.value.status == 400


# --- watch -------------------------------------------------------------------------------------


def collect(v1, timeout=1, count=None, **kwargs):
    """Events of one watch, until ``count`` arrived or the server ends the stream at ``timeout``."""
    w = watch.Watch()
    out = []
    for e in w.stream(v1.list_namespaced_pod, "default", timeout_seconds=timeout, **kwargs):
        out.append((e["type"], e["object"].metadata.name, e["object"].metadata.resource_version))
        if count is not None and len(out) >= count:
            w.stop()
    return out


def test_watch_from_resource_version_sees_exactly_later_events(v1):
    body = lambda n: pod_body(n, SLEEP, nodeName="other-node")
    v1.create_namespaced_pod("default", body("before"))
    start = v1.list_namespaced_pod("default").metadata.resource_version
    a = v1.create_namespaced_pod("default", body("a"))
    b = v1.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"x": "y"}}})
    c = v1.delete_namespaced_pod("before", "default", grace_period_seconds=0)
    events = collect(v1, resource_version=start)
    assert events == [
        ("ADDED", "a", a.metadata.resource_version),
        ("MODIFIED", "a", b.metadata.resource_version),
        ("DELETED", "before", c.metadata.resource_version),
    ]
    # no resourceVersion: the current state as ADDED events
    assert [(t, n) for t, n, _ in collect(v1, count=1)] == [("ADDED", "a")]
    assert [(t, n) for t, n, _ in collect(v1, count=1, resource_version="0")] == [("ADDED", "a")]


def test_watch_label_change_moves_objects_in_and_out_of_the_selector(v1):
    v1.create_namespaced_pod("default", pod_body("w", SLEEP, labels={"owner": "me"}, nodeName="other-node"))
    start = v1.list_namespaced_pod("default").metadata.resource_version
    out = v1.patch_namespaced_pod("w", "default", {"metadata": {"labels": {"owner": "you"}}})
    back = v1.patch_namespaced_pod("w", "default", {"metadata": {"labels": {"owner": "me"}}})
    w = watch.Watch()
    events = list(
        w.stream(
            v1.list_namespaced_pod,
            "default",
            label_selector="owner=me",
            resource_version=start,
            timeout_seconds=1,
        )
    )
    assert [(e["type"], e["object"].metadata.resource_version) for e in events] == [
        ("DELETED", out.metadata.resource_version),
        ("ADDED", back.metadata.resource_version),
    ]
    # the DELETED event carries the object as it last matched
    assert events[0]["object"].metadata.labels == {"owner": "me"}


def test_watch_410_after_compaction(cluster, v1):
    v1.create_namespaced_pod("default", pod_body("c", SLEEP, nodeName="other-node"))
    old = v1.list_namespaced_pod("default").metadata.resource_version
    v1.patch_namespaced_pod("c", "default", {"metadata": {"labels": {"v": "2"}}})
    cluster.compact()
    with pytest.raises(ApiException) as err:
        collect(v1, resource_version=old)
    assert err.value.status == 410
    # the raw stream carries an ERROR event with an Expired Status
    resp = v1.list_namespaced_pod("default", watch=True, resource_version=old, _preload_content=False)
    lines = [json.loads(line) for line in resp.read().decode().splitlines()]
    assert lines[0]["type"] == "ERROR"
    assert lines[0]["object"]["code"] == 410 and lines[0]["object"]["reason"] == "Expired"
    # list at an exact resourceVersion that is gone: 410
    with pytest.raises(ApiException) as err:
        v1.list_namespaced_pod("default", resource_version=old, resource_version_match="Exact")
    assert err.value.status == 410
    current = v1.list_namespaced_pod("default").metadata.resource_version
    assert collect(v1, resource_version=current) == []


def test_watch_timeout_seconds_and_bookmarks(v1):
    started = time.monotonic()
    w = watch.Watch()
    events = list(w.stream(v1.list_namespaced_pod, "default", timeout_seconds=1, allow_watch_bookmarks=True))
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 4
    assert events and {e["type"] for e in events} == {"BOOKMARK"}


def test_cut_watches_over_http(cluster, v1):
    control = FakeClusterControl(cluster.url)
    result: list = []

    def run():
        w = watch.Watch()
        result.extend(w.stream(v1.list_namespaced_pod, "default", timeout_seconds=30))

    t = threading.Thread(target=run)
    started = time.monotonic()
    t.start()
    wait_for(
        lambda: (
            cluster.store.watchers and len([w for w in cluster.store.watchers if not hasattr(w, "internal")])
        )
    )
    assert control.cut_watches() == 1
    t.join(10)
    assert not t.is_alive() and time.monotonic() - started < 10


def test_raw_watch_forms_and_abrupt_cut(cluster, v1):
    v1.create_namespaced_pod("default", pod_body("raw", SLEEP, nodeName="other-node"))
    v1.create_namespaced_pod("default", pod_body("other", SLEEP, nodeName="other-node"))
    for path in (
        "/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Draw",
        "/api/v1/watch/namespaces/default/pods/raw?timeoutSeconds=1",
    ):
        with urllib.request.urlopen(cluster.url + path, timeout=10) as resp:
            assert resp.headers["Transfer-Encoding"] == "chunked"
            events = [json.loads(line) for line in resp.read().splitlines()]
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "raw")]

    errors: list = []

    def run():
        try:
            for _ in watch.Watch().stream(v1.list_namespaced_pod, "default", timeout_seconds=30):
                pass
        except urllib3.exceptions.ProtocolError as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    wait_for(lambda: [w for w in cluster.store.watchers if not hasattr(w, "internal")])
    time.sleep(0.2)
    assert cluster.cut_watches(abrupt=True) == 1
    t.join(10)
    assert not t.is_alive() and errors


def test_put_requires_resource_version_and_eviction_subresource(cluster, v1):
    v1.create_namespaced_pod("default", pod_body("e", SLEEP))
    wait_for(phase_is(v1, "e", "Running"))
    current = v1.read_namespaced_pod("e", "default")
    current.metadata.resource_version = None
    with pytest.raises(ApiException) as err:
        v1.replace_namespaced_pod("e", "default", current)
    assert (err.value.status, error_body(err.value)["reason"]) == (422, "Invalid")
    pid = cluster.pod_pid("default", "e")
    v1.create_namespaced_pod_eviction(
        "e", "default", {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "e"}}
    )
    wait_for(lambda: not v1.list_namespaced_pod("default", field_selector="metadata.name=e").items)
    assert wait_for(lambda: gone(pid), timeout=5)


# --- kubelet -----------------------------------------------------------------------------------


def test_kubelet_runs_success_and_failure(v1):
    v1.create_namespaced_pod("default", pod_body("ok", ["python", "-c", "print('done')"]))
    v1.create_namespaced_pod("default", pod_body("bad", ["sh", "-c", "echo oops >&2; exit 3"]))
    ok = wait_for(phase_is(v1, "ok", "Succeeded", "Failed"))
    assert ok.status.phase == "Succeeded"
    term = ok.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (0, "Completed") and term.started_at and term.finished_at
    assert ok.spec.node_name == "fake-node-1" and ok.status.pod_ip and ok.status.start_time
    conds = {c.type: c.status for c in ok.status.conditions}
    assert conds["PodScheduled"] == "True" and conds["Ready"] == "False"
    bad = wait_for(phase_is(v1, "bad", "Succeeded", "Failed"))
    assert bad.status.phase == "Failed"
    term = bad.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (3, "Error")
    assert v1.read_namespaced_pod_log("bad", "default") == "oops\n" or "oops" in v1.read_namespaced_pod_log(
        "bad", "default"
    )
    reasons = [
        e.reason for e in v1.list_namespaced_event("default", field_selector="involvedObject.name=ok").items
    ]
    assert "Scheduled" in reasons and "Started" in reasons


def test_watch_sees_the_pod_lifecycle(v1):
    start = v1.list_namespaced_pod("default").metadata.resource_version
    v1.create_namespaced_pod("default", pod_body("life", ["python", "-c", "import time; time.sleep(0.3)"]))
    phases = []
    w = watch.Watch()
    for e in w.stream(v1.list_namespaced_pod, "default", resource_version=start, timeout_seconds=10):
        phases.append(e["object"].status.phase)
        if e["object"].status.phase == "Succeeded":
            w.stop()
    assert phases[0] == "Pending" and phases[-1] == "Succeeded" and "Running" in phases


def test_env_and_field_refs_reach_the_process(v1):
    env = [
        {"name": "GREETING", "value": "hello"},
        {"name": "MSG", "value": "$(GREETING) world $$(GREETING)"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    script = "import json, os; print(json.dumps({k: os.environ.get(k) for k in ['MSG', 'POD', 'NS', 'IP', 'NODE', 'HOSTNAME']}))"
    v1.create_namespaced_pod("default", pod_body("envy", ["python", "-c", script], env=env))
    wait_for(phase_is(v1, "envy", "Succeeded"))
    resp = v1.read_namespaced_pod_log("envy", "default", _preload_content=False)
    seen = json.loads(resp.data)
    assert seen == {
        "MSG": "hello world $(GREETING)",
        "POD": "envy",
        "NS": "default",
        "IP": "127.0.0.1",
        "NODE": "fake-node-1",
        "HOSTNAME": "envy",
    }


def test_logs_tail_follow_and_waiting(cluster, v1):
    script = "import time\nfor i in range(5):\n    print(f'line {i}', flush=True)\n    time.sleep(0.1)"
    cluster.set_faults(slow_start_seconds=0.5)
    v1.create_namespaced_pod("default", pod_body("talk", ["python", "-c", script]))
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_pod_log("talk", "default")
    assert err.value.status == 400 and "is waiting to start" in error_body(err.value)["message"]
    wait_for(phase_is(v1, "talk", "Running", "Succeeded"))
    resp = v1.read_namespaced_pod_log("talk", "default", follow=True, _preload_content=False)
    assert resp.read().decode().splitlines() == [f"line {i}" for i in range(5)]
    tail = v1.read_namespaced_pod_log("talk", "default", tail_lines=2, _preload_content=False)
    assert tail.data.decode() == "line 3\nline 4\n"
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_pod_log("talk", "default", container="nope")
    assert err.value.status == 400


def test_delete_kills_the_process(cluster, v1):
    v1.create_namespaced_pod("default", pod_body("sleepy", SLEEP))
    wait_for(phase_is(v1, "sleepy", "Running"))
    pid = cluster.pod_pid("default", "sleepy")
    start = v1.read_namespaced_pod("sleepy", "default").metadata.resource_version
    deleted = v1.delete_namespaced_pod(
        "sleepy", "default", body=client.V1DeleteOptions(grace_period_seconds=5)
    )
    assert deleted.metadata.deletion_timestamp is not None
    events = []
    w = watch.Watch()
    for e in w.stream(v1.list_namespaced_pod, "default", resource_version=start, timeout_seconds=10):
        events.append(e)
        if e["type"] == "DELETED":
            w.stop()
    assert events[-1]["type"] == "DELETED"
    final = events[-1]["object"]
    assert final.status.container_statuses[0].state.terminated.exit_code == 143  # SIGTERM
    assert wait_for(lambda: gone(pid), timeout=5)
    with pytest.raises(ApiException):
        v1.read_namespaced_pod("sleepy", "default")


def test_missing_executable_is_a_start_error(v1):
    v1.create_namespaced_pod("default", pod_body("nope", ["definitely-not-a-binary-xyz"]))
    pod = wait_for(phase_is(v1, "nope", "Failed"))
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (128, "StartError")


def test_restart_policy_on_failure_restarts_the_container(tmp_path):
    with FakeCluster(root_dir=tmp_path / "k", restart_backoff_seconds=0.1) as c:
        v1 = client.CoreV1Api(
            config.new_client_from_config(config_file=str(c.write_kubeconfig(tmp_path / "kc")))
        )
        script = "test -f marker && exit 0; touch marker; exit 1"
        body = pod_body("again", ["sh", "-c", script])
        body["spec"]["restartPolicy"] = "OnFailure"
        v1.create_namespaced_pod("default", body)
        pod = wait_for(phase_is(v1, "again", "Succeeded", "Failed"))
        status = pod.status.container_statuses[0]
        assert pod.status.phase == "Succeeded" and status.restart_count == 1
        assert status.last_state.terminated.exit_code == 1
        v1.api_client.close()


# --- termination messages ----------------------------------------------------------------------

needs_mount_namespace = pytest.mark.skipif(
    __import__("fake_k8s.kubelet", fromlist=["x"]).mount_namespace_prefix() is None,
    reason="no mount namespace here (unshare as root, or unprivileged user namespaces): "
    "the fake cannot mount termination message files",
)


def terminated(v1, name):
    pod = wait_for(phase_is(v1, name, "Succeeded", "Failed"))
    return pod, [s.state.terminated for s in pod.status.container_statuses]


def py(code):
    return ["python", "-c", code]


@needs_mount_namespace
def test_termination_message_file(cluster, v1):
    host_file_before = os.path.lexists("/dev/termination-log")
    code = "open('/dev/termination-log', 'w').write('all done\\n'); print('log line')"
    v1.create_namespaced_pod("default", pod_body("tm-ok", py(code)))
    v1.create_namespaced_pod(
        "default", pod_body("tm-other", py("open('/dev/termination-log', 'w').write('mine')"))
    )

    pod, (state,) = terminated(v1, "tm-ok")
    assert (pod.status.phase, state.exit_code, state.message) == ("Succeeded", 0, "all done\n")
    assert pod.spec.containers[0].termination_message_path == "/dev/termination-log"
    assert pod.spec.containers[0].termination_message_policy == "File"
    # Each pod has a file of its own, in its own mount namespace: the node's /dev is untouched.
    _, (other,) = terminated(v1, "tm-other")
    assert other.message == "mine"
    assert os.path.lexists("/dev/termination-log") == host_file_before


@needs_mount_namespace
def test_termination_message_keeps_the_last_4096_bytes(cluster, v1):
    code = "import sys; open('/dev/termination-log', 'w').write('a' * 5000 + 'b' * 96); sys.exit(3)"
    v1.create_namespaced_pod("default", pod_body("tm-long", py(code)))

    pod, (state,) = terminated(v1, "tm-long")
    assert (pod.status.phase, state.exit_code, state.reason) == ("Failed", 3, "Error")
    assert state.message == "a" * 4000 + "b" * 96


@needs_mount_namespace
def test_termination_message_of_a_pod_is_shared_out_between_its_containers(cluster, v1):
    body = pod_body("tm-four", py("open('/dev/termination-log', 'w').write('m' * 4096)"))
    first = body["spec"]["containers"][0]
    body["spec"]["containers"] += [{**first, "name": f"side-{i}"} for i in range(3)]
    v1.create_namespaced_pod("default", body)

    _, states = terminated(v1, "tm-four")
    # 12 KiB for the pod, split evenly: the first 3072 bytes of each.
    assert states[0].message == "m" * 3072


@needs_mount_namespace
def test_termination_message_path_of_the_pod_spec(cluster, v1, tmp_path):
    path = tmp_path / "not-there" / "why"
    body = pod_body("tm-path", py(f"open({str(path)!r}, 'w').write('custom')"))
    body["spec"]["containers"][0]["terminationMessagePath"] = str(path)
    v1.create_namespaced_pod("default", body)

    _, (state,) = terminated(v1, "tm-path")
    assert state.message == "custom"
    assert not path.parent.exists(), "made in the pod's mount namespace only"


@needs_mount_namespace
def test_fallback_to_logs_on_error(cluster, v1):
    def pod(name, code):
        body = pod_body(name, py(code))
        body["spec"]["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
        v1.create_namespaced_pod("default", body)

    lines = "import sys\nfor i in range(100): print(f'line {i:03d} ' + 'x' * 10)\n"
    pod("fb-logs", lines + "sys.exit(1)")
    pod("fb-file-wins", lines + "open('/dev/termination-log', 'w').write('from the file'); sys.exit(1)")
    pod("fb-success", lines)
    pod("fb-wide", "import sys; print('y' * 3000); sys.exit(2)")

    _, (state,) = terminated(v1, "fb-logs")
    expected = "".join(f"line {i:03d} {'x' * 10}\n" for i in range(20, 100))
    assert state.message == expected  # the last 80 lines
    assert terminated(v1, "fb-file-wins")[1][0].message == "from the file"
    assert terminated(v1, "fb-success")[1][0].message is None  # only when the container failed
    assert terminated(v1, "fb-wide")[1][0].message == "y" * 2047 + "\n"  # at most 2048 bytes


def test_fallback_to_logs_without_a_mount_namespace(cluster, v1, monkeypatch):
    from fake_k8s import kubelet

    monkeypatch.setattr(kubelet, "mount_namespace_prefix", lambda: None)
    body = pod_body("fb-plain", py("import sys; print('it broke'); sys.exit(1)"))
    body["spec"]["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
    v1.create_namespaced_pod("default", body)

    assert terminated(v1, "fb-plain")[1][0].message == "it broke\n"


@needs_mount_namespace
def test_termination_message_of_a_restarted_container(cluster, v1, tmp_path):
    marker = tmp_path / "ran"
    code = (
        "import os, sys\n"
        f"first = not os.path.exists({str(marker)!r})\n"
        f"open({str(marker)!r}, 'a').close()\n"
        "open('/dev/termination-log', 'w').write('first run' if first else 'second run')\n"
        "sys.exit(1 if first else 0)\n"
    )
    v1.create_namespaced_pod("default", pod_body("tm-again", py(code), restartPolicy="OnFailure"))

    pod, (state,) = terminated(v1, "tm-again")
    assert state.message == "second run"
    assert pod.status.container_statuses[0].last_state.terminated.message == "first run"


def test_termination_message_policy_is_validated(cluster, v1):
    body = pod_body("tm-bad", py("pass"))
    body["spec"]["containers"][0]["terminationMessagePolicy"] = "Sometimes"

    with pytest.raises(ApiException) as err:
        v1.create_namespaced_pod("default", body)

    assert err.value.status == 422
    (cause,) = error_body(err.value)["details"]["causes"]
    assert cause["field"] == "spec.containers[0].terminationMessagePolicy"
    assert "must be 'File' or 'FallbackToLogsOnError'" in cause["message"]


# --- fault knobs -------------------------------------------------------------------------------


def test_image_pull_failure(cluster, v1):
    control = FakeClusterControl(cluster.url)
    control.set_faults(image_pull_fail_pattern=r"^broken/", image_pull_backoff_seconds=0.2)
    v1.create_namespaced_pod("default", pod_body("pull", ["python", "-c", "pass"], image="broken/img:1"))

    def waiting_reasons():
        statuses = v1.read_namespaced_pod("pull", "default").status.container_statuses or []
        return {s.state.waiting.reason for s in statuses if s.state.waiting}

    seen: set = set()
    wait_for(lambda: seen.update(waiting_reasons()) or {"ErrImagePull", "ImagePullBackOff"} <= seen)
    assert v1.read_namespaced_pod("pull", "default").status.phase == "Pending"
    control.set_faults(image_pull_fail_pattern=None)
    wait_for(phase_is(v1, "pull", "Succeeded"))


def test_unschedulable_pod_stays_pending_until_the_fault_clears(cluster, v1):
    control = FakeClusterControl(cluster.url)
    control.set_faults(unschedulable_pattern=r"^stuck-")
    v1.create_namespaced_pod("default", pod_body("stuck-1", ["python", "-c", "pass"]))
    v1.create_namespaced_pod("default", pod_body("free-1", ["python", "-c", "pass"]))
    wait_for(phase_is(v1, "free-1", "Succeeded"))

    def unschedulable():
        pod = v1.read_namespaced_pod("stuck-1", "default")
        conditions = {c.type: c for c in pod.status.conditions or []}
        scheduled = conditions.get("PodScheduled")
        return pod if scheduled is not None and scheduled.reason == "Unschedulable" else None

    pod = wait_for(unschedulable)
    time.sleep(0.5)
    pod = v1.read_namespaced_pod("stuck-1", "default")
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None
    assert not pod.status.container_statuses and pod.status.start_time is None
    (scheduled,) = [c for c in pod.status.conditions if c.type == "PodScheduled"]
    assert scheduled.status == "False" and "0/1 nodes are available" in scheduled.message
    events = v1.list_namespaced_event("default", field_selector="involvedObject.name=stuck-1").items
    assert [(e.reason, e.type, e.source.component) for e in events] == [
        ("FailedScheduling", "Warning", "default-scheduler")
    ]
    assert control.faults()["unschedulable_pattern"] == "^stuck-"

    control.set_faults(unschedulable_pattern=None)
    pod = wait_for(phase_is(v1, "stuck-1", "Succeeded"))
    (scheduled,) = [c for c in pod.status.conditions if c.type == "PodScheduled"]
    assert scheduled.status == "True" and not scheduled.reason and not scheduled.message


def test_unschedulable_pod_is_deleted_at_once(cluster, v1):
    cluster.set_faults(unschedulable_pattern="^stuck-")
    v1.create_namespaced_pod("default", pod_body("stuck-2", ["python", "-c", "pass"]))
    wait_for(lambda: v1.read_namespaced_pod("stuck-2", "default").status.conditions)

    v1.delete_namespaced_pod("stuck-2", "default")

    with pytest.raises(ApiException) as err:
        v1.read_namespaced_pod("stuck-2", "default")
    assert err.value.status == 404
    wait_for(lambda: not cluster.kubelet.workers)


def test_slow_start(cluster, v1):
    cluster.set_faults(slow_start_seconds=1.0)
    v1.create_namespaced_pod("default", pod_body("slow", ["python", "-c", "pass"]))
    time.sleep(0.5)
    assert v1.read_namespaced_pod("slow", "default").status.phase == "Pending"
    wait_for(phase_is(v1, "slow", "Succeeded"))


def test_evict(cluster, v1):
    v1.create_namespaced_pod("default", pod_body("ev", SLEEP))
    wait_for(phase_is(v1, "ev", "Running"))
    pid = cluster.pod_pid("default", "ev")
    assert FakeClusterControl(cluster.url).evict("default", "ev", "low on memory")
    pod = wait_for(phase_is(v1, "ev", "Failed"))
    assert (pod.status.reason, pod.status.message) == ("Evicted", "low on memory")
    assert wait_for(lambda: gone(pid), timeout=5)


def test_lose_node(cluster, v1):
    v1.create_namespaced_pod("default", pod_body("lost", SLEEP))
    wait_for(phase_is(v1, "lost", "Running"))
    pid = cluster.pod_pid("default", "lost")
    start = v1.read_namespaced_pod("lost", "default").metadata.resource_version
    assert FakeClusterControl(cluster.url).lose_node() == ["default/lost"]
    w = watch.Watch()
    events = list(w.stream(v1.list_namespaced_pod, "default", resource_version=start, timeout_seconds=1))
    assert [e["type"] for e in events] == ["DELETED"]
    # a forced delete, as the pod GC does for a vanished node: no terminal phase was ever written
    assert events[0]["object"].metadata.deletion_timestamp is not None
    assert events[0]["object"].status.phase == "Running"
    with pytest.raises(ApiException):
        v1.read_namespaced_pod("lost", "default")
    assert wait_for(lambda: gone(pid), timeout=5)


# --- client paths the executor uses ------------------------------------------------------------


def test_dynamic_client_partial_metadata_list(cluster, v1, tmp_path):
    from kubernetes.dynamic import DynamicClient

    v1.create_namespaced_pod("default", pod_body("meta", SLEEP, labels={"kubernetes_executor": "True"}))
    dyn = DynamicClient(v1.api_client, cache_file=str(tmp_path / "discovery.json"))
    resource = dyn.resources.get(api_version="v1", kind="Pod")
    result = dyn.get(
        resource=resource,
        namespace="default",
        label_selector="kubernetes_executor=True",
        field_selector="status.phase!=Succeeded",
        header_params={"Accept": "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"},
    )
    assert result.kind == "PartialObjectMetadataList"
    assert [item.metadata.name for item in result.items] == ["meta"]


def test_stop_leaves_no_processes(tmp_path):
    before = set(threading.enumerate())
    with FakeCluster(python_exe=sys.executable, root_dir=tmp_path / "k") as c:
        path = c.write_kubeconfig(tmp_path / "kc")
        api = config.new_client_from_config(config_file=str(path))
        v1 = client.CoreV1Api(api)
        # the pod's process starts a grandchild in a process group of its own (as the task
        # supervisor does), which starts a great-grandchild
        script = (
            "import subprocess, time\n"
            "p = subprocess.Popen(['sh', '-c', 'sleep 60 & echo $!; sleep 60'], process_group=0)\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(60)\n"
        )
        v1.create_namespaced_pod("default", pod_body("tree", ["python", "-c", script]))
        wait_for(phase_is(v1, "tree", "Running"))
        pids = [c.pod_pid("default", "tree")]
        log = lambda: v1.read_namespaced_pod_log("tree", "default", _preload_content=False).data.split()
        pids += [int(p) for p in wait_for(lambda: len(log()) >= 2 and log())]
        stream_done = threading.Event()

        def hold_watch():
            w = watch.Watch()
            for _ in w.stream(v1.list_namespaced_pod, "default", timeout_seconds=60):
                pass
            stream_done.set()

        t = threading.Thread(target=hold_watch, daemon=True)
        t.start()
        time.sleep(0.2)
    assert stream_done.wait(5)
    api.close()
    assert wait_for(
        lambda: not [t for t in threading.enumerate() if t not in before and t.name.startswith("fake-")],
        timeout=5,
    )

    assert wait_for(lambda: all(gone(pid) for pid in pids), timeout=5), pids


def test_run_as_module(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    env = {**os.environ, "PYTHONPATH": str(DEV)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fake_k8s",
            "--port",
            "0",
            "--kubeconfig",
            str(kubeconfig),
            "--python-exe",
            sys.executable,
        ],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        api = config.new_client_from_config(config_file=str(kubeconfig))
        v1 = client.CoreV1Api(api)
        v1.create_namespaced_pod("default", pod_body("m", SLEEP))
        wait_for(phase_is(v1, "m", "Running"))
        pid = FakeClusterControl(url).pod_pid("default", "m")
        api.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert wait_for(lambda: gone(pid), timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
