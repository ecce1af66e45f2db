"""Scaffolding shared by the API tests: the real app on the test's rolled-back session, a client
that answers server errors with a 500 instead of raising, and `act_as` to choose the caller.

The caller is injected with `dependency_overrides[get_principal]`, so these tests do not depend
on logging in; a caller's "session" is a real `UserSession` row (stepped up unless a test says).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from admin_factories import make_user_session
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from orchestrator import policy
from orchestrator.api.app import create_app
from orchestrator.api.deps import Principal, get_principal, get_session
from orchestrator.config import Settings
from orchestrator.models import ApiToken, User


def api_app(
    settings: Settings,
    session: Session,
    overrides: Mapping[Callable[..., Any], Callable[..., Any]] | None = None,
) -> FastAPI:
    """The real app whose routes share `session`, with further dependency `overrides`."""
    app = create_app(settings)

    def test_session() -> Iterator[Session]:
        yield session

    app.dependency_overrides[get_session] = test_session
    app.dependency_overrides.update(overrides or {})
    return app


def serve(app: FastAPI) -> Iterator[TestClient]:
    """For an `api` fixture: a client that turns server exceptions into 500 answers."""
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def act_as(
    app: FastAPI,
    session: Session,
    user: User,
    *,
    stepped_up: bool = True,
    token_scopes: set[str] | None = None,
    expires_at: datetime | None = None,
) -> None:
    """Make `user` the caller: on a browser session (stepped up or not), or on an API token
    (expiring `expires_at`, a day from now unless given)."""
    if token_scopes is not None:
        token = ApiToken(
            prefix=secrets.token_hex(6),
            secret_hash="0" * 64,
            user_id=user.id,
            name="automation",
            scopes=sorted(token_scopes),
            expires_at=expires_at or datetime.now(UTC) + timedelta(days=1),
        )
        session.add(token)
        session.flush()
        principal = Principal(user, None, token, frozenset(token_scopes))
    else:
        user_session = make_user_session(session, user)
        user_session.stepped_up_at = datetime.now(UTC) if stepped_up else None
        principal = Principal(user, user_session, None, policy.scopes_for_role(user.role))
    app.dependency_overrides[get_principal] = lambda: principal
