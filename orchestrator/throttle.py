"""Login throttling from recorded attempts: growing delays per account, a ceiling per account and
per source address over a sliding hour. It only ever delays: nothing here locks an account, and
every refusal ends by itself, at the latest an hour after the failures stop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BindParameter, Select, Table, and_, bindparam, func, insert, select
from sqlalchemy.orm import Session

from orchestrator.config import Settings
from orchestrator.errors import TooManyRequests
from orchestrator.models import LoginAttempt, UTCDateTime

WINDOW = timedelta(hours=1)
FREE_FAILURES = 5  # failures in the window before delays start
MAX_DELAY_SECONDS = 15 * 60
USERNAME_KEY_LENGTH = 64  # LoginAttempt.username
SOURCE_KEY_LENGTH = 45  # LoginAttempt.source


class Throttled(TooManyRequests):
    """Refused before any credential is checked; `details["retry_after"]` is in seconds and the
    error handler turns it into a `Retry-After` header."""

    def __init__(self, retry_after: int, scope: str) -> None:
        super().__init__(
            "Too many failed attempts: try again later.",
            {"retry_after": retry_after},
        )
        self.retry_after = retry_after
        self.scope = scope


@dataclass(frozen=True)
class Verdict:
    retry_after: int  # seconds; 0 means go ahead
    scope: str = ""  # "account" or "source" when refused


def account_key(username: str) -> str:
    return username[:USERNAME_KEY_LENGTH]


def source_key(source: str) -> str:
    return source[:SOURCE_KEY_LENGTH]


def delay_after(failures: int) -> int:
    """Seconds to wait after the last failure: none for the first few, then doubling from one
    second, capped at 15 minutes."""
    if failures < FREE_FAILURES:
        return 0
    return min(1 << (failures - FREE_FAILURES), MAX_DELAY_SECONDS)


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


def _attempts() -> Table:
    return LoginAttempt.__table__  # type: ignore[return-value]


def _since() -> BindParameter[datetime]:
    return bindparam("since", type_=UTCDateTime())


def _build_check() -> Select[Any]:
    """One statement for every figure throttling needs (it runs before each login)."""
    t = _attempts()
    last_success = (
        select(func.max(t.c.at))
        .where(t.c.username == bindparam("username"), t.c.success.is_(True), t.c.at > _since())
        .scalar_subquery()
    )
    account = and_(
        t.c.username == bindparam("username"),
        t.c.success.is_(False),
        t.c.at > _since(),
        t.c.at > func.coalesce(last_success, _since()),
    )
    source = and_(t.c.source == bindparam("source"), t.c.success.is_(False), t.c.at > _since())
    return select(
        select(func.count()).select_from(t).where(account).scalar_subquery(),
        select(func.min(t.c.at)).where(account).scalar_subquery(),
        select(func.max(t.c.at)).where(account).scalar_subquery(),
        select(func.count()).select_from(t).where(source).scalar_subquery(),
        select(func.min(t.c.at)).where(source).scalar_subquery(),
    )


_CHECK = _build_check()
_RECORD = insert(_attempts())


def check_throttle(
    session: Session, settings: Settings, username: str, source: str, now: datetime
) -> Verdict:
    """Whether an attempt for `username` from `source` may go ahead now.

    Per account, failures count from the later of an hour ago and the last success (a user who
    finally got in starts afresh); per source, every failure in the hour counts (many accounts
    behind one address are exactly what this guards against).
    """
    params = {
        "username": account_key(username),
        "source": source_key(source),
        "since": now - WINDOW,
    }
    count, oldest, newest, source_count, source_oldest = session.execute(_CHECK, params).one()
    if count >= settings.login_failures_per_account_hour:
        return Verdict(_seconds(oldest + WINDOW - now), "account")
    if count and now < newest + timedelta(seconds=delay_after(count)):
        return Verdict(_seconds(newest + timedelta(seconds=delay_after(count)) - now), "account")
    if source_count >= settings.login_failures_per_source_hour:
        return Verdict(_seconds(source_oldest + WINDOW - now), "source")
    return Verdict(0)


def record_attempt(
    session: Session, username: str, source: str, success: bool, now: datetime
) -> None:
    """Written at once (a plain INSERT, no unit of work): it is on every login's path."""
    session.execute(
        _RECORD,
        {
            "username": account_key(username),
            "source": source_key(source),
            "at": now,
            "success": success,
        },
    )
