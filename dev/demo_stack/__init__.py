"""Local Airflow demo stack that shows executor callbacks running end to end.

The orchestrator in this package uses the Python standard library only.  It runs every
Airflow component as a subprocess of the Airflow virtualenv's interpreter, so it can be
imported (and unit tested) without Airflow installed.

Entry point: ``scripts/demo`` -> ``python -m demo_stack`` with ``dev/`` on ``sys.path``.
"""

from __future__ import annotations
