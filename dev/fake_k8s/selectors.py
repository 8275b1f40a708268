"""Label and field selectors, parsed the way apimachinery parses them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fake_k8s.errors import bad_request
from fake_k8s.validation import label_key_errors, label_value_errors

_SPECIAL = set("!=(),<> \t\n\r")


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c in " \t\n\r":
            i += 1
        elif text.startswith("==", i) or text.startswith("!=", i):
            out.append(("op", text[i : i + 2]))
            i += 2
        elif c in "=<>":
            out.append(("op", c))
            i += 1
        elif c == "!":
            out.append(("not", c))
            i += 1
        elif c in "(),":
            out.append((c, c))
            i += 1
        else:
            j = i
            while j < len(text) and text[j] not in _SPECIAL:
                j += 1
            word = text[i:j]
            out.append(("op", word) if word in ("in", "notin") else ("id", word))
            i = j
    return out


class Requirement:
    def __init__(self, key: str, op: str, values: list[str]) -> None:
        self.key, self.op, self.values = key, op, values

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "==", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if not present:
            return False
        try:
            have, want = int(value or ""), int(self.values[0])
        except ValueError:
            return False
        return have > want if self.op == ">" else have < want


class LabelSelector:
    def __init__(self, requirements: list[Requirement]) -> None:
        self.requirements = requirements

    def matches(self, labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)


def _fail(text: str, why: str):
    return bad_request(f"unable to parse requirement: {why}")


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse ``text``; raise a 400 ``ApiError`` for a malformed selector."""
    if not text or not text.strip():
        return LabelSelector([])
    toks = _tokens(text)
    pos = 0
    reqs: list[Requirement] = []

    def peek() -> tuple[str, str]:
        return toks[pos] if pos < len(toks) else ("eof", "")

    while True:
        negate = False
        kind, val = peek()
        if kind == "not":
            negate = True
            pos += 1
            kind, val = peek()
        if kind != "id":
            raise bad_request(f"found '{val or 'EOS'}', expected: !, identifier, or 'end of string'")
        key = val
        pos += 1
        errs = label_key_errors(key, "key")
        if errs:
            raise _fail(text, errs[0].message())
        kind, val = peek()
        if negate:
            reqs.append(Requirement(key, "!", []))
        elif kind in ("eof", ","):
            reqs.append(Requirement(key, "exists", []))
        elif kind == "op":
            op = val
            pos += 1
            values: list[str] = []
            if op in ("in", "notin"):
                if peek()[0] != "(":
                    raise bad_request(f"found '{peek()[1] or 'EOS'}', expected: '('")
                pos += 1
                expect_value = True
                while True:
                    k, v = peek()
                    if k == ")":
                        if expect_value and values:
                            values.append("")
                        pos += 1
                        break
                    if k == "id" and expect_value:
                        values.append(v)
                        expect_value = False
                    elif k == ",":
                        if expect_value:
                            values.append("")
                        expect_value = True
                    else:
                        raise bad_request(f"found '{v or 'EOS'}', expected: ',', ')' or identifier")
                    pos += 1
                if not values:
                    raise _fail(text, "for 'in', 'notin' operators, values set can't be empty")
            else:
                k, v = peek()
                if k == "id":
                    values.append(v)
                    pos += 1
                elif k in ("eof", ","):
                    values.append("")
                else:
                    raise bad_request(f"found '{v}', expected: identifier after '{op}'")
                if op in ("<", ">"):
                    try:
                        int(values[0])
                    except ValueError:
                        raise _fail(
                            text, f"for 'Gt', 'Lt' operators, the value must be an integer: {values[0]}"
                        ) from None
            for value in values:
                verrs = label_value_errors(value, "values")
                if verrs and op not in ("<", ">"):
                    raise _fail(text, verrs[0].message())
            reqs.append(Requirement(key, op, values))
        else:
            raise bad_request(f"found '{val}', expected: in, notin, =, ==, !=, gt, lt")
        kind, val = peek()
        if kind == "eof":
            break
        if kind != ",":
            raise bad_request(f"found '{val}', expected: ',' or 'end of string'")
        pos += 1
    return LabelSelector(reqs)


def _nested(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def _pod_ips(obj: dict[str, Any]) -> str:
    return ",".join(ip.get("ip", "") for ip in (obj.get("status", {}).get("podIPs") or []))


FIELDS: dict[str, dict[str, Callable[[dict[str, Any]], str]]] = {
    "pods": {
        **{
            f: (lambda o, f=f: _nested(o, f))
            for f in (
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            )
        },
        "status.podIPs": _pod_ips,
    },
    "namespaces": {f: (lambda o, f=f: _nested(o, f)) for f in ("metadata.name", "status.phase")},
    "events": {
        f: (lambda o, f=f: _nested(o, f))
        for f in (
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        )
    },
}


class FieldSelector:
    def __init__(self, terms: list[tuple[str, str, str]], getters: dict[str, Callable]) -> None:
        self.terms = terms
        self.getters = getters

    def matches(self, obj: dict[str, Any]) -> bool:
        for field, op, value in self.terms:
            have = self.getters[field](obj)
            if (have == value) != (op != "!="):
                return False
        return True


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, i = [], [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if text[i] == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(text[i])
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def parse_field_selector(text: str | None, resource: str) -> FieldSelector:
    getters = FIELDS.get(resource, {"metadata.name": lambda o: _nested(o, "metadata.name")})
    terms: list[tuple[str, str, str]] = []
    if text and text.strip():
        for term in _split_unescaped(text, ","):
            for op in ("!=", "==", "="):
                idx = term.find(op)
                if idx >= 0:
                    field, value = term[:idx].strip(), term[idx + len(op) :]
                    break
            else:
                raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
            if field not in getters:
                raise bad_request(f"field label not supported: {field}")
            terms.append((field, "!=" if op == "!=" else "=", _unescape(value)))
    return FieldSelector(terms, getters)
