"""Run upstream Airflow's own provider test suites against the work tree.

See README.md in this directory. The runner (``python -m upstream_suites``) uses the
standard library only; pytest runs in the target virtualenv as a subprocess.
"""

from __future__ import annotations
