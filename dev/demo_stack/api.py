"""A tiny client for the Airflow REST API (v2), standard library only."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class ApiError(Exception):
    """An HTTP error (or connection failure) talking to the api-server."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class AirflowApi:
    """Calls the public REST API.  With ``simple_auth_manager_all_admins`` no token is needed."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.base_url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as err:
            text = err.read().decode(errors="replace")
            raise ApiError(f"{method} {path} -> HTTP {err.code}: {text[:500]}", err.code, text) from None
        except (urllib.error.URLError, OSError) as err:
            raise ApiError(f"{method} {path} failed: {err}") from None
        return json.loads(payload) if payload else None

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/api/v2/monitor/health")

    def warm_execution_api(self, timeout: float = 180.0) -> None:
        """
        Make the api-server build the execution API's routes now, not on a worker's first call.

        The api-server builds them on the first request to ``/execution`` (seconds of CPU on a slow
        machine), and serves nothing else meanwhile: an edge worker whose heartbeats wait that
        long is taken for dead.
        """
        AirflowApi(self.base_url, timeout=timeout).request("GET", "/execution/health")

    def get_dag(self, dag_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v2/dags/{_q(dag_id)}")

    def import_errors(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/v2/importErrors").get("import_errors", [])

    def set_paused(self, dag_id: str, paused: bool) -> dict[str, Any]:
        return self.request("PATCH", f"/api/v2/dags/{_q(dag_id)}", {"is_paused": paused})

    def trigger(self, dag_id: str) -> dict[str, Any]:
        return self.request("POST", f"/api/v2/dags/{_q(dag_id)}/dagRuns", {"logical_date": None})

    def get_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")
