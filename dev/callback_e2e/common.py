"""What the executors' end-to-end tests share: the virtualenvs, names the e2e DAGs use, and settings."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
STABLE_PYTHON = str(ROOT / ".venv-stable" / "bin" / "python")
# A pool with no slots: the e2e DAGs' tasks that use it never start, so a Deadline Alert is missed.
BLOCKED_POOL = "e2e_blocked"
FINISHED = ("success", "failed")
# What a callback process logs when its callable returned.
SUCCESS_LOG = "Callback executed successfully"
# A queue that only the workers a test starts for it listen to.
OTHER_QUEUE = "other"
# What the scheduler stores when an executor reports a failed callback without saying why.
GENERIC_FAILURE = "Execution failed"
# Short heartbeats and timeouts: a dead scheduler is noticed, and its work adopted, within seconds.
FAST_RECOVERY = {
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "6",
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "3",
}
