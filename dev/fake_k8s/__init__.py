"""A fake Kubernetes API server with a process kubelet, for tests without a cluster."""

from fake_k8s.cluster import FakeCluster, FakeClusterControl
from fake_k8s.kubelet import Faults

__all__ = ["FakeCluster", "FakeClusterControl", "Faults"]
