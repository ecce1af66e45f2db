"""Structured logging: structlog and stdlib logging through one renderer, secrets redacted.

JSON for machines, readable lines on a terminal; request id and user come from contextvars.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, Protocol

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"
_HANDLER_NAME = "kluis"

# A key is sensitive when it contains one of these ...
_SENSITIVE_PARTS = ("password", "passwd", "secret", "token", "cookie", "authorization", "apikey")
# ... or has one of these as a whole word (`totp_code`, `api_key`, but not `status_code`).
_SENSITIVE_WORDS = frozenset({"code", "otp", "totp", "pin", "key", "credential", "credentials"})
_HARMLESS_KEYS = frozenset({"status_code", "error_code", "exit_code", "event"})


class TextStream(Protocol):
    def write(self, text: str, /) -> int: ...
    def flush(self) -> None: ...
    def isatty(self) -> bool: ...


class _CurrentStderr:
    """Whatever `sys.stderr` is when writing: test runners and daemons swap it."""

    def write(self, text: str, /) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


class LoggingSettings(Protocol):
    """What logging needs of `Settings` (a Protocol: `log` and `config` are independent layers)."""

    @property
    def log_format(self) -> str: ...

    @property
    def log_level(self) -> str: ...


def is_sensitive(key: str) -> bool:
    name = key.lower().replace("-", "_")
    if name in _HARMLESS_KEYS:
        return False
    if any(part in name for part in _SENSITIVE_PARTS):
        return True
    return any(word in _SENSITIVE_WORDS for word in name.split("_"))


def redact(value: Any) -> Any:
    """Copy of `value` with the values of sensitive keys replaced, at any depth."""
    if isinstance(value, Mapping):
        return {k: REDACTED if is_sensitive(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: never let a password, token, code or cookie reach the output."""
    return {k: REDACTED if is_sensitive(k) else redact(v) for k, v in event_dict.items()}


def configure_logging(settings: LoggingSettings, stream: TextStream | None = None) -> None:
    """Route structlog and stdlib logging to `stream` (default stderr). Safe to call again."""
    out = stream if stream is not None else _CurrentStderr()
    fmt = str(settings.log_format)
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: Processor
    if as_json:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(str(settings.log_level))
