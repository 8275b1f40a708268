"""
Early pytest plugin (``-p upstream_suites.pytest_glue``) for upstream suites.

It is imported before any conftest and thus before ``tests_common.pytest_plugin``
imports Airflow, so it is the place to point Airflow at a throwaway home and
metadata database. Every pytest-xdist worker gets its own AIRFLOW_HOME and
SQLite file so workers never share (and clear) each other's database.

Must not import airflow.
"""

from __future__ import annotations

import os
from pathlib import Path

_base = os.environ.get("UPSTREAM_SUITES_HOME")
if _base:
    _worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    _home = Path(_base, _worker)
    _home.mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_HOME"] = str(_home)
    if not os.environ.get("UPSTREAM_SUITES_KEEP_DB_CONN"):
        _conn = f"sqlite:///{_home / 'airflow.db'}"
        os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = _conn
