"""API errors rendered as ``Status`` objects, shaped like the real API server's."""

from __future__ import annotations

from typing import Any, ClassVar

# kind name used in ``details.kind`` for each resource (the real server uses the resource name there,
# e.g. ``pods``, for NotFound/AlreadyExists/Conflict, and the Kind for Invalid).
RESOURCE_KIND = {"pods": "Pod", "namespaces": "Namespace", "events": "Event"}


class ApiError(Exception):
    """An error answered with a ``Status`` body."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(resource: str, name: str | None) -> dict[str, Any]:
    return {"name": name, "kind": resource} if name else {"kind": resource}


def not_found(resource: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{resource} "{name}" not found', _details(resource, name))


def already_exists(resource: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists', _details(resource, name))


def conflict(resource: str, name: str, why: str | None = None) -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource} "{name}": {why}',
        _details(resource, name),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def method_not_allowed(method: str = "") -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"application/json-patch+json, application/merge-patch+json, "
        f'application/strategic-merge-patch+json (got "{content_type}")',
    )


class FieldError:
    """One ``field.Error``; rendered like apimachinery's ``field.Error.Error()``."""

    def __init__(self, kind: str, field: str, value: Any = None, detail: str = "") -> None:
        self.kind = kind  # Required, Invalid, Duplicate, Forbidden, TooLong, NotSupported
        self.field = field
        self.value = value
        self.detail = detail

    _REASONS: ClassVar[dict[str, tuple[str, str]]] = {
        "Required": ("FieldValueRequired", "Required value"),
        "Invalid": ("FieldValueInvalid", "Invalid value"),
        "Duplicate": ("FieldValueDuplicate", "Duplicate value"),
        "Forbidden": ("FieldValueForbidden", "Forbidden"),
        "TooLong": ("FieldValueTooLong", "Too long"),
        "NotSupported": ("FieldValueNotSupported", "Unsupported value"),
    }

    def _value_text(self) -> str:
        v = self.value
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, bool):
            return "true" if v else "false"
        if v is None:
            return "null"
        return str(v)

    def body(self) -> str:
        label = self._REASONS[self.kind][1]
        if self.kind in ("Invalid", "Duplicate", "NotSupported"):
            text = f"{label}: {self._value_text()}"
            if self.detail:
                text += f": {self.detail}"
            return text
        return f"{label}: {self.detail}" if self.detail else label

    def message(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> dict[str, str]:
        return {"reason": self._REASONS[self.kind][0], "message": self.body(), "field": self.field}


def invalid(kind: str, name: str, errors: list[FieldError]) -> ApiError:
    """422 Invalid, as ``apierrors.NewInvalid`` renders it."""
    agg = errors[0].message() if len(errors) == 1 else "[" + ", ".join(e.message() for e in errors) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {agg}',
        {"name": name, "kind": kind, "causes": [e.cause() for e in errors]},
    )
