"""KubernetesExecutor stack: every task and callback runs in a pod of the local fake cluster.

The fake Kubernetes API server and its process kubelet (``dev/fake_k8s``) stand in for a
cluster: the executor, its watcher and the kubernetes client talk to it over HTTP on loopback,
and each pod's container command runs as a local process with the demo's Python and
environment, as a worker image built from the same installation would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from demo_stack.stacks.base import ExecutorStack, StackContext

if TYPE_CHECKING:
    from k8s_e2e import LocalKubernetes


class KubernetesExecutorStack(ExecutorStack):
    name = "KubernetesExecutor"

    def __init__(self) -> None:
        self._kube: LocalKubernetes | None = None

    def config(self, ctx: StackContext) -> dict[str, str]:
        # Imported when the stack is used: the other stacks need neither the harness nor the fake.
        from k8s_e2e import executor_config

        return {**super().config(ctx), **executor_config(ctx.airflow_home), "AIRFLOW__CORE__PARALLELISM": "4"}

    def setup(self, ctx: StackContext) -> None:
        from k8s_e2e import LocalKubernetes

        self._kube = LocalKubernetes(ctx.airflow_home, ctx.python, ctx.env).start()

    def teardown(self, ctx: StackContext) -> None:
        if self._kube is not None:
            self._kube.stop()
            self._kube = None
