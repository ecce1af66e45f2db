"""Logging: JSON output, contextvars binding, and redaction of secrets at any depth."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from orchestrator.config import Settings
from orchestrator.log import REDACTED, configure_logging, is_sensitive


@pytest.fixture
def log_output(tmp_path: Path) -> Iterator[io.StringIO]:
    """JSON logs captured from the real renderer; logging is reset afterwards."""
    stream = io.StringIO()
    configure_logging(Settings(data_dir=tmp_path, log_format="json"), stream=stream)
    yield stream
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "stream", None) is stream]:
        root.removeHandler(handler)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_log_redacts_secret_keys(log_output: io.StringIO) -> None:
    log = structlog.get_logger("test")

    log.info(
        "login_attempt",
        user="ann",
        password="hunter2",
        totp_code="123456",
        api_token="tok-abc",
        headers={"Authorization": "Bearer xyz", "Cookie": "session=s3cr3t", "Accept": "*/*"},
        attempts=[{"secret_key": "k"}],
        status_code=401,
    )

    text = log_output.getvalue()
    for secret in ("hunter2", "123456", "tok-abc", "Bearer xyz", "s3cr3t"):
        assert secret not in text
    (event,) = events(log_output)
    assert event["event"] == "login_attempt"
    assert event["user"] == "ann"
    assert event["password"] == REDACTED
    assert event["headers"] == {"Authorization": REDACTED, "Cookie": REDACTED, "Accept": "*/*"}
    assert event["attempts"] == [{"secret_key": REDACTED}]
    assert event["status_code"] == 401


def test_log_binds_contextvars(log_output: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(request_id="req-1", user_id=7)

    structlog.get_logger("test").info("did_something")

    (event,) = events(log_output)
    assert (event["request_id"], event["user_id"], event["level"]) == ("req-1", 7, "info")


def test_log_stdlib_records_share_the_format(log_output: io.StringIO) -> None:
    logging.getLogger("some.library").warning("disk %s full", "/data")

    (event,) = events(log_output)
    assert event["event"] == "disk /data full"
    assert event["logger"] == "some.library"
    assert event["level"] == "warning"


def test_log_level_filters_debug(log_output: io.StringIO) -> None:
    structlog.get_logger("test").debug("noise")

    assert events(log_output) == []


@pytest.mark.parametrize(
    ("key", "sensitive"),
    [
        ("password", True),
        ("new_password", True),
        ("X-Auth-Token", True),
        ("set-cookie", True),
        ("totp", True),
        ("code", True),
        ("recovery_code", True),
        ("api_key", True),
        ("status_code", False),
        ("project", False),
        ("user_id", False),
        ("event", False),
    ],
)
def test_is_sensitive_classifies_keys(key: str, sensitive: bool) -> None:
    assert is_sensitive(key) is sensitive
