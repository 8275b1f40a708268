"""Import every module a wheel ships; run with the interpreter of the virtualenv it is installed in.

    python import_modules.py OWN_PACKAGES_JSON MODULE...

Prints one JSON object: ``imported`` (count), ``optional`` (module -> what it lacks: a third-party
module or another provider that is not installed) and ``failed`` (module -> error: one of our own
modules or names is missing, or the module raised). ``OWN_PACKAGES_JSON`` lists the packages the
built wheels ship; a missing module inside one of them is a file our artifacts lack.

Standalone on purpose: it runs in the artifacts' virtualenv, which has nothing of dev/.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback

# Not our own even though they sit under airflow.*: namespaces every distribution adds to.
NAMESPACES = {"airflow", "airflow.providers"}


def owned(name: str, own: set[str]) -> bool:
    """Whether module ``name`` would be a file of one of our wheels (a package of ours holds it)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in NAMESPACES:
            # airflow.<x>: core's own, unless it is a namespace others fill (airflow.providers).
            return prefix == "airflow" and i < len(parts) and ".".join(parts[:2]) not in NAMESPACES
        if prefix in own:
            return True
    return False


def classify(module: str, exc: BaseException, own: set[str]) -> tuple[str, str]:
    """``("optional", why)`` for a dependency that is not installed, else ``("failed", why)``."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return ("failed" if owned(exc.name, own) else "optional"), text
    if isinstance(exc, ImportError):
        source = getattr(exc, "name", None) or ""
        if source and owned(source, own):
            return "failed", text
        return "optional", text
    if type(exc).__name__ == "AirflowOptionalProviderFeatureException":
        return "optional", text
    last = traceback.extract_tb(exc.__traceback__)[-1:] or []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return "failed", text + where


def main(argv: list[str]) -> int:
    own = set(json.loads(argv[0]))
    result: dict = {"imported": 0, "optional": {}, "failed": {}}
    for module in argv[1:]:
        try:
            importlib.import_module(module)
        except BaseException as exc:  # a module that exits or raises anything is reported
            if isinstance(exc, KeyboardInterrupt):
                raise
            kind, why = classify(module, exc, own)
            result[kind][module] = why
        else:
            result["imported"] += 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
