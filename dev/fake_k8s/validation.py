"""Validation and defaulting the real API server applies to namespaces and pods."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from fake_k8s.errors import FieldError

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL_RE = re.compile(rf"^{_LABEL}$")
DNS1123_SUBDOMAIN_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_QNAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
QUALIFIED_NAME_RE = re.compile(rf"^{_QNAME}$")
LABEL_VALUE_RE = re.compile(rf"^({_QNAME})?$")

MSG_LABEL = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
MSG_SUBDOMAIN = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
MSG_QNAME = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
    "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
MSG_LABEL_VALUE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
    "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024
RESTART_POLICIES = ("Always", "OnFailure", "Never")
TERMINATION_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")


def dns1123_label_errors(value: str, field: str) -> list[FieldError]:
    errs = []
    if len(value) > 63:
        errs.append(FieldError("Invalid", field, value, "must be no more than 63 characters"))
    if not DNS1123_LABEL_RE.match(value):
        errs.append(FieldError("Invalid", field, value, MSG_LABEL))
    return errs


def dns1123_subdomain_errors(value: str, field: str) -> list[FieldError]:
    errs = []
    if len(value) > 253:
        errs.append(FieldError("Invalid", field, value, "must be no more than 253 characters"))
    if not DNS1123_SUBDOMAIN_RE.match(value):
        errs.append(FieldError("Invalid", field, value, MSG_SUBDOMAIN))
    return errs


def label_key_errors(key: str, field: str) -> list[FieldError]:
    """A qualified name: ``[prefix/]name``."""
    parts = key.split("/")
    if len(parts) == 1:
        prefix, name = "", parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return [FieldError("Invalid", field, key, "prefix part must be non-empty")]
    else:
        return [FieldError("Invalid", field, key, "a qualified name " + MSG_QNAME[len("name part ") :])]
    errs = []
    if prefix:
        for e in dns1123_subdomain_errors(prefix, field):
            errs.append(FieldError("Invalid", field, key, "prefix part " + e.detail))
    if not name:
        errs.append(FieldError("Invalid", field, key, "name part must be non-empty"))
    else:
        if len(name) > 63:
            errs.append(FieldError("Invalid", field, key, "name part must be no more than 63 characters"))
        if not QUALIFIED_NAME_RE.match(name):
            errs.append(FieldError("Invalid", field, key, MSG_QNAME))
    return errs


def label_value_errors(value: str, field: str) -> list[FieldError]:
    errs = []
    if len(value) > 63:
        errs.append(FieldError("Invalid", field, value, "must be no more than 63 characters"))
    if not LABEL_VALUE_RE.match(value):
        errs.append(FieldError("Invalid", field, value, MSG_LABEL_VALUE))
    return errs


def metadata_errors(meta: dict[str, Any], *, namespaced: bool) -> list[FieldError]:
    errs: list[FieldError] = []
    name = meta.get("name")
    if name:
        fn = dns1123_subdomain_errors if namespaced else dns1123_label_errors
        errs += fn(name, "metadata.name")
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        return [FieldError("Invalid", "metadata.labels", str(labels), "must be a map of strings")]
    for key, value in labels.items():
        errs += label_key_errors(key, "metadata.labels")
        if not isinstance(value, str):
            errs.append(FieldError("Invalid", f"metadata.labels[{key}]", str(value), "must be a string"))
        else:
            errs += label_value_errors(value, "metadata.labels")
    annotations = meta.get("annotations") or {}
    total = 0
    for key, value in annotations.items():
        errs += [
            FieldError("Invalid", "metadata.annotations", key, e.detail)
            for e in label_key_errors(key, "metadata.annotations")
        ]
        total += len(key) + len(str(value).encode())
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        errs.append(
            FieldError(
                "TooLong",
                "metadata.annotations",
                None,
                f"must have at most {TOTAL_ANNOTATION_SIZE_LIMIT} bytes",
            )
        )
    return errs


def _container_errors(containers: Any, path: str, seen: set[str]) -> list[FieldError]:
    errs: list[FieldError] = []
    if not isinstance(containers, list):
        return [FieldError("Invalid", path, None, "must be a list")]
    for i, c in enumerate(containers):
        p = f"{path}[{i}]"
        if not isinstance(c, dict):
            errs.append(FieldError("Invalid", p, None, "must be an object"))
            continue
        name = c.get("name")
        if not name:
            errs.append(FieldError("Required", f"{p}.name"))
        else:
            errs += dns1123_label_errors(name, f"{p}.name")
            if name in seen:
                errs.append(FieldError("Duplicate", f"{p}.name", name))
            seen.add(name)
        if not c.get("image"):
            errs.append(FieldError("Required", f"{p}.image"))
        for j, env in enumerate(c.get("env") or []):
            ename = env.get("name") if isinstance(env, dict) else None
            if not ename:
                errs.append(FieldError("Required", f"{p}.env[{j}].name"))
            elif "=" in ename or not all(32 <= ord(ch) < 127 for ch in ename):
                errs.append(
                    FieldError(
                        "Invalid",
                        f"{p}.env[{j}].name",
                        ename,
                        "a valid environment variable name must consist only of printable ASCII "
                        "characters other than '='",
                    )
                )
            elif "value" in env and "valueFrom" in env and env["value"]:
                errs.append(
                    FieldError(
                        "Invalid",
                        f"{p}.env[{j}].valueFrom",
                        "",
                        "may not be specified when `value` is not empty",
                    )
                )
        policy = c.get("terminationMessagePolicy")
        if policy is not None and policy not in TERMINATION_MESSAGE_POLICIES:
            errs.append(
                FieldError(
                    "Invalid",
                    f"{p}.terminationMessagePolicy",
                    policy,
                    "must be 'File' or 'FallbackToLogsOnError'",
                )
            )
        for field in ("command", "args"):
            value = c.get(field)
            if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                errs.append(FieldError("Invalid", f"{p}.{field}", None, "must be a list of strings"))
    return errs


def pod_errors(pod: dict[str, Any]) -> list[FieldError]:
    errs = metadata_errors(pod.get("metadata") or {}, namespaced=True)
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return [*errs, FieldError("Required", "spec.containers")]
    containers = spec.get("containers")
    seen: set[str] = set()
    if not containers:
        errs.append(FieldError("Required", "spec.containers"))
    else:
        errs += _container_errors(containers, "spec.containers", seen)
    errs += _container_errors(spec.get("initContainers") or [], "spec.initContainers", seen)
    policy = spec.get("restartPolicy")
    if policy is not None and policy not in RESTART_POLICIES:
        errs.append(
            FieldError(
                "NotSupported",
                "spec.restartPolicy",
                policy,
                "supported values: " + ", ".join(f'"{p}"' for p in RESTART_POLICIES),
            )
        )
    ads = spec.get("activeDeadlineSeconds")
    if ads is not None and (not isinstance(ads, int) or ads <= 0):
        errs.append(
            FieldError(
                "Invalid", "spec.activeDeadlineSeconds", ads, "must be between 1 and 2147483647, inclusive"
            )
        )
    tgps = spec.get("terminationGracePeriodSeconds")
    if tgps is not None and not isinstance(tgps, int):
        errs.append(FieldError("Invalid", "spec.terminationGracePeriodSeconds", tgps, "must be an integer"))
    node = spec.get("nodeName")
    if node:
        errs += dns1123_subdomain_errors(node, "spec.nodeName")
    return errs


def _pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def default_pod(pod: dict[str, Any]) -> None:
    """Apply the defaults the real server fills in on create (the ones a client is likely to read)."""
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if not isinstance(c, dict):
                continue
            # Go's defaulting fills zero values: an empty string counts as unset
            if not c.get("terminationMessagePath"):
                c["terminationMessagePath"] = "/dev/termination-log"
            if not c.get("terminationMessagePolicy"):
                c["terminationMessagePolicy"] = "File"
            c.setdefault("imagePullPolicy", _pull_policy(str(c.get("image") or "")))
            c.setdefault("resources", {})
            for port in c.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
    if "tolerations" not in spec:
        spec["tolerations"] = [
            {
                "key": f"node.kubernetes.io/{what}",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            }
            for what in ("not-ready", "unreachable")
        ]


IMMUTABLE_MESSAGE = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)"
)


def pod_spec_update_errors(old: dict[str, Any], new: dict[str, Any]) -> list[FieldError]:
    """What ``ValidatePodUpdate`` forbids: any spec change outside the mutable fields."""
    errs: list[FieldError] = []
    mutable = copy.deepcopy(new)
    for key in ("containers", "initContainers"):
        olds, news = old.get(key) or [], mutable.get(key) or []
        if len(olds) == len(news):
            for o, n in zip(olds, news, strict=True):
                if isinstance(n, dict) and isinstance(o, dict):
                    if not n.get("image"):
                        errs.append(FieldError("Required", f"spec.{key}[].image"))
                    n["image"] = o.get("image")
    old_ads, new_ads = old.get("activeDeadlineSeconds"), new.get("activeDeadlineSeconds")
    if old_ads is not None and (not isinstance(new_ads, int) or new_ads > old_ads):
        errs.append(
            FieldError(
                "Invalid",
                "spec.activeDeadlineSeconds",
                new_ads if new_ads is not None else "nil",
                "must be less than or equal to previous value",
            )
        )
    if old_ads is None:
        mutable.pop("activeDeadlineSeconds", None)
    else:
        mutable["activeDeadlineSeconds"] = old_ads
    old_tol, new_tol = old.get("tolerations") or [], new.get("tolerations") or []
    if all(t in new_tol for t in old_tol):
        mutable["tolerations"] = old.get("tolerations")
        if "tolerations" not in old:
            mutable.pop("tolerations", None)
    if json.dumps(mutable, sort_keys=True) != json.dumps(old, sort_keys=True):
        errs.append(FieldError("Forbidden", "spec", None, IMMUTABLE_MESSAGE))
    return errs
