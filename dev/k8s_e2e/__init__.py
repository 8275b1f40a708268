"""KubernetesExecutor on the fake cluster: what the demo and the end-to-end tests share.

``LocalKubernetes`` starts a :class:`fake_k8s.FakeCluster` whose kubelet runs each pod's
command with the Airflow virtualenv's Python and the components' environment (the pods of a
real deployment get the same image and configuration), and writes the kubeconfig and the
worker pod template the executor reads. ``executor_config`` is the Airflow configuration that
points KubernetesExecutor at it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from fake_k8s import FakeCluster

NAMESPACE = "default"
WORKER_IMAGE = "airflow-e2e/worker:local"
POD_TEMPLATE = f"""\
apiVersion: v1
kind: Pod
metadata:
  name: placeholder-name
spec:
  containers:
    - name: base
      image: {WORKER_IMAGE}
  restartPolicy: Never
"""


def kubeconfig_path(root: Path) -> Path:
    return root / "kube" / "config"


def pod_template_path(root: Path) -> Path:
    return root / "kube" / "pod_template.yaml"


def executor_config(root: Path) -> dict[str, str]:
    """``AIRFLOW__*`` variables for KubernetesExecutor on the cluster that ``LocalKubernetes(root)`` starts."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "KubernetesExecutor",
        "AIRFLOW__KUBERNETES_EXECUTOR__IN_CLUSTER": "False",
        "AIRFLOW__KUBERNETES_EXECUTOR__CONFIG_FILE": str(kubeconfig_path(root)),
        "AIRFLOW__KUBERNETES_EXECUTOR__POD_TEMPLATE_FILE": str(pod_template_path(root)),
        "AIRFLOW__KUBERNETES_EXECUTOR__NAMESPACE": NAMESPACE,
        # Pods of a burst are created in a few scheduler loops, not one per loop.
        "AIRFLOW__KUBERNETES_EXECUTOR__WORKER_PODS_CREATION_BATCH_SIZE": "16",
    }


class LocalKubernetes:
    """The fake cluster for one Airflow installation rooted at ``root``; stops every pod on exit."""

    def __init__(self, root: Path, python: str, pod_env: Mapping[str, str]):
        self.root = root
        self.cluster = FakeCluster(
            base_env=dict(pod_env), python_exe=python, root_dir=root / "kube" / "nodes"
        )
        self._running = False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        pod_template_path(self.root).parent.mkdir(parents=True, exist_ok=True)
        pod_template_path(self.root).write_text(POD_TEMPLATE)
        self.cluster.start()
        self._running = True
        self.cluster.write_kubeconfig(kubeconfig_path(self.root), namespace=NAMESPACE)
        return self

    def stop(self) -> None:
        """Stop the cluster and every pod process; a second call does nothing."""
        if self._running:
            self._running = False
            self.cluster.stop()

    def pods(self) -> list[dict[str, Any]]:
        """Every pod the cluster holds now, in every namespace, as the API server stores them."""
        items, _ = self.cluster.store.list("pods", None)
        return items

    def client(self) -> Any:
        """A ``kubernetes.client.CoreV1Api`` on the cluster, as ``kubectl`` would talk to it."""
        from kubernetes import client, config

        return client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig_path(self.root))))

    def callback_pods(self) -> list[dict[str, Any]]:
        """The pods labelled ``airflow-workload-type=callback``: one per callback the executor launched."""
        return [
            p
            for p in self.pods()
            if (p["metadata"].get("labels") or {}).get("airflow-workload-type") == "callback"
        ]
