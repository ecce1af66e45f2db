"""The error vocabulary of Kluis: one base carrying an HTTP status and a short machine code.

Domain code raises these; the API turns them into one JSON shape. No side effects here.
"""

from __future__ import annotations

from typing import Any, ClassVar


class KluisError(Exception):
    """Base of every expected failure. `message` is safe to show to the caller."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class Invalid(KluisError):
    status_code = 422
    code = "invalid"


class AuthFailed(KluisError):
    status_code = 401
    code = "auth_failed"


class Forbidden(KluisError):
    status_code = 403
    code = "forbidden"


class NotFound(KluisError):
    status_code = 404
    code = "not_found"


class Conflict(KluisError):
    status_code = 409
    code = "conflict"


class TooManyRequests(KluisError):
    status_code = 429
    code = "too_many_requests"


class Unavailable(KluisError):
    status_code = 503
    code = "unavailable"
