"""Executor-specific stacks.

A stack knows how to configure and run Airflow for one executor: the ``[core] executor``
value, extra configuration, and any extra processes it needs (an Edge worker, a Celery
worker and broker, a fake Kubernetes cluster...).  Add a harness by subclassing
:class:`~demo_stack.stacks.base.ExecutorStack` and registering it in ``STACKS``.
"""

from __future__ import annotations

from demo_stack.stacks.aws_batch import AwsBatchExecutorStack
from demo_stack.stacks.aws_ecs import AwsEcsExecutorStack
from demo_stack.stacks.aws_lambda import AwsLambdaExecutorStack
from demo_stack.stacks.base import ExecutorStack, StackContext, UnsupportedExecutor
from demo_stack.stacks.celery import CeleryExecutorStack
from demo_stack.stacks.edge import EdgeExecutorStack
from demo_stack.stacks.kubernetes import KubernetesExecutorStack
from demo_stack.stacks.local import LocalExecutorStack

STACKS: dict[str, type[ExecutorStack]] = {
    LocalExecutorStack.name: LocalExecutorStack,
    KubernetesExecutorStack.name: KubernetesExecutorStack,
    EdgeExecutorStack.name: EdgeExecutorStack,
    CeleryExecutorStack.name: CeleryExecutorStack,
    AwsEcsExecutorStack.name: AwsEcsExecutorStack,
    AwsBatchExecutorStack.name: AwsBatchExecutorStack,
    AwsLambdaExecutorStack.name: AwsLambdaExecutorStack,
}

# Executors we intend to support; their harness does not exist yet.
PLANNED: dict[str, str] = {}


def get_stack(name: str) -> ExecutorStack:
    """Return the stack for executor ``name``; raise :class:`UnsupportedExecutor` otherwise."""
    try:
        return STACKS[name]()
    except KeyError:
        pass
    if name in PLANNED:
        message = (
            f"the demo harness for {name} does not exist yet (it will need {PLANNED[name]}). "
            f"Supported: {', '.join(sorted(STACKS))}."
        )
    else:
        message = f"unknown executor {name!r}. Supported: {', '.join(sorted(STACKS))}."
    raise UnsupportedExecutor(message)


__all__ = ["PLANNED", "STACKS", "ExecutorStack", "StackContext", "UnsupportedExecutor", "get_stack"]
