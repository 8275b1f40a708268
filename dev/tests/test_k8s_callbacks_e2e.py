"""End to end: executor callbacks on KubernetesExecutor, one pod each, on the fake cluster.

Each test starts api-server, dag-processor and scheduler(s) with KubernetesExecutor (the
patched cncf-kubernetes provider from the work tree), and the fake Kubernetes API server and
process kubelet of ``dev/fake_k8s``: the executor, its watcher process and the kubernetes
client talk to it over HTTP, and every pod (task or callback) runs its container command, the
task SDK's ``execute_workload``, as a local process.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callback_e2e.common import BLOCKED_POOL, FINISHED, PYTHON, STABLE_PYTHON
from callback_e2e.scenarios import deadline_callbacks, deadline_phases
from callback_e2e.stack import AirflowStack, wait_for
from k8s_e2e import LocalKubernetes, executor_config

# A dead scheduler is noticed, and its callbacks offered for adoption, within seconds.
FAST_ADOPTION = {
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "6",
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "3",
}

pytestmark = pytest.mark.e2e


@contextmanager
def k8s_stack(
    backend: str = "sqlite", config: Mapping[str, str] | None = None, python: str = PYTHON
) -> Iterator[tuple]:
    """An Airflow stack on KubernetesExecutor and its fake cluster; a scheduler must be started."""
    stack = AirflowStack(python, backend, {"AIRFLOW__CORE__PARALLELISM": "16", **(config or {})})
    stack.config.update(executor_config(stack.root))
    stack.config.update(config or {})
    with LocalKubernetes(stack.root, python, stack.env()) as kube, stack:
        stack.wait_healthy()
        stack.api.request("POST", "/api/v2/pools", {"name": BLOCKED_POOL, "slots": 0})
        yield stack, kube


def _wait_finished(stack: AirflowStack, dag_id: str, count: int = 1, timeout: float = 180) -> list[dict]:
    def finished() -> list[dict] | None:
        callbacks = deadline_callbacks(stack, dag_id)
        done = [c for c in callbacks if c["state"] in FINISHED]
        return callbacks if len(done) >= count else None

    callbacks = wait_for(f"{count} finished callback(s) of {dag_id}", finished, timeout)
    time.sleep(2)  # a second report of the same callback would land now
    return deadline_callbacks(stack, dag_id) or callbacks


def _pod_log(kube: LocalKubernetes, pod: dict) -> str:
    meta = pod["metadata"]
    return kube.client().read_namespaced_pod_log(meta["name"], meta["namespace"])


@pytest.fixture(scope="module")
def sqlite_k8s():
    """One SQLite stack for the scenarios that do not kill a component; each uses DAGs of its own."""
    config = {"AIRFLOW__KUBERNETES_EXECUTOR__DELETE_WORKER_PODS": "False"}
    with k8s_stack(config=config) as (stack, kube):
        stack.scheduler()
        stack.wait_dags(
            [
                "e2e_deadline_ok",
                "e2e_deadline_fails",
                "e2e_deadline_slow",
                "e2e_deadline_watch",
                "e2e_deadline_burst",
            ]
        )
        yield stack, kube


def _pod_of(kube: LocalKubernetes, callback: dict) -> dict:
    pods = [p for p in kube.callback_pods() if p["metadata"]["annotations"]["callback_id"] == callback["id"]]
    assert len(pods) == 1, f"pods of callback {callback['id']}: {[p['metadata'] for p in kube.pods()]}"
    return pods[0]


def test_deadline_callback_runs_in_its_own_pod(sqlite_k8s):
    stack, kube = sqlite_k8s
    stack.trigger("e2e_deadline_ok", "ok-1")

    (callback,) = _wait_finished(stack, "e2e_deadline_ok")
    assert callback["state"] == "success", (callback["output"], stack.logs())
    assert deadline_phases(stack, "e2e_deadline_ok") == {"started": 1, "ended": 1}
    pod = _pod_of(kube, callback)
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["metadata"]["name"].startswith("callback-")
    assert pod["metadata"]["labels"]["airflow-worker"]
    assert "task_id" not in (pod["metadata"].get("annotations") or {})
    assert "Callback executed successfully" in _pod_log(kube, pod)


def test_failing_deadline_callback_ends_failed_with_its_reason_and_log(sqlite_k8s):
    stack, kube = sqlite_k8s
    stack.trigger("e2e_deadline_fails", "fails-1")

    (callback,) = _wait_finished(stack, "e2e_deadline_fails")
    assert callback["state"] == "failed"
    assert deadline_phases(stack, "e2e_deadline_fails") == {"started": 1}, "run once, not retried"
    pod = _pod_of(kube, callback)
    assert pod["status"]["phase"] == "Failed"
    assert "fails on purpose" in _pod_log(kube, pod)
    # The worker recorded why (task-sdk 0026), naming the callable and what it raised; the container
    # also wrote it to its termination message, which the executor reports when the worker cannot.
    (status,) = pod["status"]["containerStatuses"]
    message = status["state"]["terminated"]["message"]
    assert message.startswith("Airflow callback failed: e2e_callbacks.deadline: "), message
    output = callback["output"] or ""
    assert output.startswith("e2e_callbacks.deadline: "), output
    assert "ValueError: deadline callback e2e_deadline_fails fails on purpose" in output, output


@pytest.mark.full
def test_callback_pod_deleted_by_hand_ends_failed_with_a_reason(sqlite_k8s):
    stack, kube = sqlite_k8s
    stack.trigger("e2e_deadline_slow", "deleted-1")
    wait_for(
        "the slow callback to start", lambda: deadline_phases(stack, "e2e_deadline_slow")["started"], 180
    )
    (callback,) = deadline_callbacks(stack, "e2e_deadline_slow")
    pod = _pod_of(kube, callback)
    kube.client().delete_namespaced_pod(pod["metadata"]["name"], pod["metadata"]["namespace"])

    (callback,) = _wait_finished(stack, "e2e_deadline_slow", timeout=120)
    assert callback["state"] == "failed"
    assert callback["output"]
    assert deadline_phases(stack, "e2e_deadline_slow") == {"started": 1}


def test_watch_cut_and_expired_resource_version_lose_no_callback(sqlite_k8s):
    stack, kube = sqlite_k8s
    stack.trigger("e2e_deadline_watch", "watch-1")
    wait_for(
        "the slow callback to start", lambda: deadline_phases(stack, "e2e_deadline_watch")["started"], 180
    )
    # The watcher reconnects from its last resourceVersion, which the cluster no longer keeps.
    kube.cluster.compact()
    kube.cluster.cut_watches()

    (callback,) = _wait_finished(stack, "e2e_deadline_watch", timeout=180)
    assert callback["state"] == "success", (callback["output"], stack.logs())
    assert deadline_phases(stack, "e2e_deadline_watch") == {"started": 1, "ended": 1}


# More runs at once than the stack's parallelism (16), so that some callbacks wait for a slot,
# and few enough to keep CI's time (each pod is a fresh Python process).
BURST = 20


@pytest.mark.full
def test_burst_of_callbacks_each_run_once_in_a_pod(sqlite_k8s):
    stack, kube = sqlite_k8s
    for i in range(BURST):
        stack.trigger("e2e_deadline_burst", f"burst-{i:02d}")

    callbacks = _wait_finished(stack, "e2e_deadline_burst", count=BURST, timeout=900)
    assert Counter(c["state"] for c in callbacks) == {"success": BURST}, stack.logs()
    # One callback per run, each run once, each in one pod of its own.
    assert len({c["data"]["dag_run_id"] for c in callbacks}) == BURST
    assert deadline_phases(stack, "e2e_deadline_burst") == {"started": BURST, "ended": BURST}
    pods = Counter(p["metadata"]["annotations"]["callback_id"] for p in kube.callback_pods())
    assert {callback["id"]: pods[callback["id"]] for callback in callbacks} == {c["id"]: 1 for c in callbacks}


def test_callback_whose_pod_never_starts_fails_as_stuck_in_queued_and_its_pod_is_deleted():
    """
    No node fits the callback's pod (the fake's unschedulable knob), so it stays Pending, which the
    executor does not take for a failure. The scheduler fails the callback once it was queued longer
    than task_queued_timeout and asks the executor to withdraw it: its pod is deleted.
    """
    config = {
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "2",
    }
    with k8s_stack(config=config) as (stack, kube):
        kube.cluster.set_faults(unschedulable_pattern=r"^callback-")
        stack.scheduler()
        stack.wait_dags(["e2e_deadline_ok"])
        stack.trigger("e2e_deadline_ok", "never-starts-1")
        (pod,) = wait_for("the callback's pod", kube.callback_pods, 180)
        assert pod["status"]["phase"] == "Pending"
        assert not pod["spec"].get("nodeName")

        (callback,) = _wait_finished(stack, "e2e_deadline_ok", timeout=180)
        assert callback["state"] == "failed"
        assert "task_queued_timeout" in (callback["output"] or ""), callback["output"]
        assert pod["metadata"]["annotations"]["callback_id"] == callback["id"]
        wait_for("the callback's pod to be deleted", lambda: not kube.callback_pods(), 60)
        assert deadline_phases(stack, "e2e_deadline_ok") == {}, "the callable never ran"
        scheduler_log = stack.logs_of(stack.running_scheduler())
        assert f"Deleted pod default/{pod['metadata']['name']} of revoked callback {callback['id']}" in (
            scheduler_log
        )


def test_callback_pod_of_a_killed_scheduler_is_adopted_and_reported_once():
    with k8s_stack("postgres", FAST_ADOPTION) as (stack, kube):
        stack.scheduler("scheduler-a")
        stack.wait_dags(["e2e_deadline_slow"])
        stack.trigger("e2e_deadline_slow", "adopted-1")
        wait_for(
            "the slow callback to start", lambda: deadline_phases(stack, "e2e_deadline_slow")["started"], 180
        )
        (pod,) = kube.callback_pods()
        old_worker = pod["metadata"]["labels"]["airflow-worker"]

        stack.kill("scheduler-a")
        stack.scheduler("scheduler-b")

        (callback,) = _wait_finished(stack, "e2e_deadline_slow", timeout=180)
        assert callback["state"] == "success", (callback["output"], stack.logs())
        # Ran once, in the pod scheduler A launched; scheduler B followed it to its end and, with
        # delete_worker_pods on (the default), deleted it.
        assert deadline_phases(stack, "e2e_deadline_slow") == {"started": 1, "ended": 1}
        wait_for("the adopted pod to be deleted", lambda: not kube.callback_pods(), 60)
        assert old_worker


@pytest.mark.full
def test_deadline_callbacks_run_in_pods_on_the_stable_core():
    """
    Core 3.3 (supports_callbacks, task SDK 1.3) with the patched provider: success, failure, a
    watch cut with an expired resourceVersion, and a pod deleted by hand. (Adoption needs the
    scheduler's callback hook of core 3.4 + airflow-core 0008; core 3.3 never offers callbacks.)
    """
    if not Path(STABLE_PYTHON).exists():
        pytest.skip("no stable baseline virtualenv: dev/series env --baseline stable")
    with k8s_stack(python=STABLE_PYTHON) as (stack, kube):
        stack.scheduler()
        stack.wait_dags(["e2e_deadline_ok", "e2e_deadline_fails", "e2e_deadline_slow", "e2e_deadline_watch"])
        stack.trigger("e2e_deadline_ok", "stable-ok")
        stack.trigger("e2e_deadline_fails", "stable-fails")
        stack.trigger("e2e_deadline_watch", "stable-watch")
        stack.trigger("e2e_deadline_slow", "stable-deleted")

        wait_for(
            "the slow callback to start", lambda: deadline_phases(stack, "e2e_deadline_slow")["started"], 180
        )
        (slow,) = deadline_callbacks(stack, "e2e_deadline_slow")
        pod = _pod_of(kube, slow)
        kube.client().delete_namespaced_pod(pod["metadata"]["name"], pod["metadata"]["namespace"])
        wait_for(
            "the watched callback to start",
            lambda: deadline_phases(stack, "e2e_deadline_watch")["started"],
            180,
        )
        kube.cluster.compact()
        kube.cluster.cut_watches()

        (ok,) = _wait_finished(stack, "e2e_deadline_ok")
        (failed,) = _wait_finished(stack, "e2e_deadline_fails")
        (watched,) = _wait_finished(stack, "e2e_deadline_watch")
        (deleted,) = _wait_finished(stack, "e2e_deadline_slow")
        states = [c["state"] for c in (ok, failed, watched, deleted)]
        assert states == ["success", "failed", "success", "failed"], stack.logs()
        assert failed["output"] and deleted["output"]
        assert deadline_phases(stack, "e2e_deadline_ok") == {"started": 1, "ended": 1}
        assert deadline_phases(stack, "e2e_deadline_fails") == {"started": 1}
        assert deadline_phases(stack, "e2e_deadline_watch") == {"started": 1, "ended": 1}
        assert deadline_phases(stack, "e2e_deadline_slow") == {"started": 1}
