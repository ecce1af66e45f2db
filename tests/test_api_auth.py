"""`/api/auth` through the app factory: login and its cookie, one answer for every failure,
throttling, session fixation, CSRF, timeouts, logout, step-up, API tokens, hostile input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from factories import MadeUser, make_institution, make_user
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator import apitokens, sessions
from orchestrator.api.app import create_app
from orchestrator.api.deps import get_now, get_session
from orchestrator.config import Settings
from orchestrator.models import Role, UserSession, UserStatus

COOKIE = "__Host-kluis_session"
GENERIC = {
    "error": {"code": "auth_failed", "message": "Invalid username, password or code", "details": {}}
}


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_app(settings: Settings, db_session: Session, clock: Clock) -> FastAPI:
    app = create_app(settings)

    def test_session() -> Iterator[Session]:
        yield db_session

    app.dependency_overrides[get_session] = test_session
    app.dependency_overrides[get_now] = clock
    return app


@pytest.fixture
def api(db_settings: Settings, db_session: Session, clock: Clock) -> Iterator[TestClient]:
    """A client over https (the session cookie is Secure) sharing the test's database session."""
    with TestClient(make_app(db_settings, db_session, clock), base_url="https://testserver") as c:
        yield c


@pytest.fixture
def made(db_session: Session, db_settings: Settings) -> MadeUser:
    made = make_user(db_session, db_settings)
    db_session.commit()
    return made


def log_in(client: TestClient, made: MadeUser, clock: Clock, **overrides: Any) -> Response:
    body = {"username": made.username, "password": made.password, "code": made.code(clock.now)}
    return client.post("/api/auth/login", json={**body, **overrides})


def logged_in(client: TestClient, made: MadeUser, clock: Clock) -> str:
    """Log in; returns the CSRF token (the cookie stays in the client)."""
    response = log_in(client, made, clock)
    assert response.status_code == 200, response.text
    token: str = response.json()["csrf_token"]
    return token


def error_code(response: Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


# --- login ----------------------------------------------------------------------------------------


def test_login_sets_host_cookie_with_exact_flags(
    api: TestClient, made: MadeUser, clock: Clock
) -> None:
    response = log_in(api, made, clock)

    assert response.status_code == 200
    body = response.json()
    assert body["user"]["username"] == made.username
    assert body["user"]["auth"] == "session"
    assert len(body["csrf_token"]) == 64
    set_cookie = response.headers["set-cookie"]
    value = response.cookies[COOKIE]
    assert set_cookie == f"{COOKIE}={value}; HttpOnly; Path=/; SameSite=strict; Secure"


def test_login_insecure_dev_cookie_drops_host_prefix(
    db_settings: Settings, db_session: Session, clock: Clock, made: MadeUser
) -> None:
    settings = db_settings.model_copy(update={"cookie_secure": False})
    with TestClient(make_app(settings, db_session, clock)) as client:
        response = log_in(client, made, clock)
        me = client.get("/api/auth/me")

    value = response.cookies["kluis_session"]
    assert (
        response.headers["set-cookie"]
        == f"kluis_session={value}; HttpOnly; Path=/; SameSite=strict"
    )
    assert me.status_code == 200


def test_me_with_session_cookie(api: TestClient, made: MadeUser, clock: Clock) -> None:
    logged_in(api, made, clock)

    response = api.get("/api/auth/me")

    assert response.status_code == 200
    assert response.json()["id"] == made.user.id
    assert set(response.json()["scopes"]) == {"read", "projects:write"}


def test_me_anonymous_401_error_shape(api: TestClient) -> None:
    response = api.get("/api/auth/me")

    assert response.status_code == 401
    assert set(response.json()["error"]) == {"code", "message", "details"}
    assert error_code(response) == "auth_failed"


def _enumeration_cases(
    db_session: Session, settings: Settings, clock: Clock
) -> list[dict[str, str]]:
    good = make_user(db_session, settings)
    suspended = make_user(db_session, settings, status=UserStatus.SUSPENDED)
    expired = make_user(
        db_session,
        settings,
        institution=make_institution(
            db_session,
            authorised_from=clock.now.date() - timedelta(days=400),
            authorised_until=clock.now.date() - timedelta(days=1),
        ),
    )
    no_statement = make_user(db_session, settings, statement_valid_until=None)
    wrong = "000000" if good.code(clock.now) != "000000" else "111111"

    def body(m: MadeUser, **overrides: str) -> dict[str, str]:
        return {
            "username": m.username,
            "password": m.password,
            "code": m.code(clock.now),
        } | overrides

    return [
        body(good, username="no-such-user"),
        body(good, password="wrong password, long enough"),
        body(good, code=wrong),
        body(suspended),
        body(expired),
        body(no_statement),
    ]


def test_login_failures_indistinguishable(
    api: TestClient, db_session: Session, db_settings: Settings, clock: Clock
) -> None:
    cases = _enumeration_cases(db_session, db_settings, clock)
    db_session.commit()

    responses = [api.post("/api/auth/login", json=case) for case in cases]

    assert [r.status_code for r in responses] == [401] * len(cases)
    assert all(r.json() == GENERIC for r in responses)
    assert all("set-cookie" not in r.headers for r in responses)
    assert {frozenset(r.headers) - {"x-request-id"} for r in responses} == {
        frozenset(responses[0].headers) - {"x-request-id"}
    }


def test_login_right_password_wrong_code_reaches_nothing(
    api: TestClient, made: MadeUser, clock: Clock, db_session: Session
) -> None:
    wrong = "000000" if made.code(clock.now) != "000000" else "111111"

    response = log_in(api, made, clock, code=wrong)

    assert response.status_code == 401
    assert not api.cookies
    assert api.get("/api/auth/me").status_code == 401
    assert db_session.scalar(select(func.count()).select_from(UserSession)) == 0


def test_login_replayed_code_refused(api: TestClient, made: MadeUser, clock: Clock) -> None:
    code = made.code(clock.now)
    assert log_in(api, made, clock, code=code).status_code == 200
    clock.advance(seconds=10)

    response = log_in(api, made, clock, code=code)

    assert response.status_code == 401
    assert response.json() == GENERIC


def test_login_throttled_429_with_retry_after(
    api: TestClient, made: MadeUser, clock: Clock
) -> None:
    for _ in range(5):
        assert log_in(api, made, clock, password="wrong password, long enough").status_code == 401

    response = log_in(api, made, clock)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert error_code(response) == "too_many_requests"
    clock.advance(seconds=1)
    assert log_in(api, made, clock).status_code == 200


def test_login_preset_cookie_never_adopted(api: TestClient, made: MadeUser, clock: Clock) -> None:
    planted = "attacker-chosen-session-value-aaaaaaaaaaaaaaa"
    api.cookies.set(COOKIE, planted)

    response = log_in(api, made, clock)

    assert response.cookies[COOKIE] != planted
    api.cookies.clear()
    api.cookies.set(COOKIE, planted)
    assert api.get("/api/auth/me").status_code == 401


def test_login_again_issues_new_session_and_ends_old(
    api: TestClient, made: MadeUser, clock: Clock
) -> None:
    logged_in(api, made, clock)
    first = api.cookies[COOKIE]
    clock.advance(seconds=30)

    logged_in(api, made, clock)
    second = api.cookies[COOKIE]

    assert first != second
    api.cookies.clear()
    api.cookies.set(COOKIE, first)
    assert api.get("/api/auth/me").status_code == 401


# --- CSRF -----------------------------------------------------------------------------------------


def test_csrf_cookie_post_without_token_403(api: TestClient, made: MadeUser, clock: Clock) -> None:
    logged_in(api, made, clock)

    response = api.post("/api/auth/logout")

    assert response.status_code == 403
    assert error_code(response) == "csrf_failed"
    assert api.get("/api/auth/me").status_code == 200


def test_csrf_cookie_post_wrong_token_403(api: TestClient, made: MadeUser, clock: Clock) -> None:
    logged_in(api, made, clock)

    response = api.post("/api/auth/logout", headers={"X-CSRF-Token": "0" * 64})

    assert response.status_code == 403


def test_csrf_cookie_post_with_header_token_ok(
    api: TestClient, made: MadeUser, clock: Clock
) -> None:
    csrf = logged_in(api, made, clock)

    response = api.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})

    assert response.status_code == 204
    assert api.get("/api/auth/me").status_code == 401


def test_csrf_cookie_post_with_form_field_ok(api: TestClient, made: MadeUser, clock: Clock) -> None:
    csrf = logged_in(api, made, clock)

    response = api.post("/api/auth/logout", data={"csrf_token": csrf})

    assert response.status_code == 204


def test_csrf_token_of_another_session_refused(
    db_settings: Settings, db_session: Session, clock: Clock, made: MadeUser, api: TestClient
) -> None:
    other = make_user(db_session, db_settings)
    db_session.commit()
    app = make_app(db_settings, db_session, clock)
    with TestClient(app, base_url="https://testserver") as attacker:
        attacker_csrf = logged_in(attacker, other, clock)
    logged_in(api, made, clock)

    response = api.post("/api/auth/logout", headers={"X-CSRF-Token": attacker_csrf})

    assert response.status_code == 403


# --- timeouts and logout --------------------------------------------------------------------------


def test_session_idle_timeout(api: TestClient, made: MadeUser, clock: Clock) -> None:
    logged_in(api, made, clock)
    clock.advance(minutes=20)
    assert api.get("/api/auth/me").status_code == 200

    clock.advance(minutes=31)

    assert api.get("/api/auth/me").status_code == 401


def test_session_absolute_timeout(api: TestClient, made: MadeUser, clock: Clock) -> None:
    logged_in(api, made, clock)
    for _ in range(35):
        clock.advance(minutes=20)
        assert api.get("/api/auth/me").status_code == 200
    clock.advance(minutes=20)  # 12 h after login

    assert api.get("/api/auth/me").status_code == 401


def test_logout_clears_cookie(api: TestClient, made: MadeUser, clock: Clock) -> None:
    csrf = logged_in(api, made, clock)
    secret = api.cookies[COOKIE]

    response = api.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})

    assert "Max-Age=0" in response.headers["set-cookie"]
    api.cookies.set(COOKIE, secret)
    assert api.get("/api/auth/me").status_code == 401


def test_logout_everywhere_ends_all_devices(
    db_settings: Settings, db_session: Session, clock: Clock, made: MadeUser, api: TestClient
) -> None:
    csrf = logged_in(api, made, clock)
    with TestClient(
        make_app(db_settings, db_session, clock), base_url="https://testserver"
    ) as laptop:
        clock.advance(seconds=30)
        logged_in(laptop, made, clock)

        response = api.post("/api/auth/logout-everywhere", headers={"X-CSRF-Token": csrf})

        assert response.json() == {"ended": 2}
        assert laptop.get("/api/auth/me").status_code == 401
    assert api.get("/api/auth/me").status_code == 401


def test_end_all_sessions_takes_effect_on_next_request(
    api: TestClient, made: MadeUser, clock: Clock, db_session: Session
) -> None:
    logged_in(api, made, clock)

    sessions.end_all_sessions(db_session, made.user, "account_suspended")

    assert api.get("/api/auth/me").status_code == 401


def test_suspended_user_session_refused_at_once(
    api: TestClient, made: MadeUser, clock: Clock, db_session: Session
) -> None:
    logged_in(api, made, clock)

    made.user.status = UserStatus.SUSPENDED
    db_session.flush()

    assert api.get("/api/auth/me").status_code == 401


def test_sessions_list_and_end_own(api: TestClient, made: MadeUser, clock: Clock) -> None:
    csrf = logged_in(api, made, clock)

    listed = api.get("/api/auth/sessions").json()
    response = api.delete(f"/api/auth/sessions/{listed[0]['id']}", headers={"X-CSRF-Token": csrf})

    assert len(listed) == 1
    assert listed[0]["current"] is True
    assert response.status_code == 204
    assert api.get("/api/auth/me").status_code == 401


def test_sessions_end_other_users_404(
    api: TestClient, made: MadeUser, clock: Clock, db_session: Session, db_settings: Settings
) -> None:
    other = make_user(db_session, db_settings).user
    theirs, _ = sessions.open_session(db_session, other, "", "", db_settings, clock.now)
    csrf = logged_in(api, made, clock)

    response = api.delete(f"/api/auth/sessions/{theirs.id}", headers={"X-CSRF-Token": csrf})

    assert response.status_code == 404
    assert theirs.ended_at is None


# --- step-up and API tokens -----------------------------------------------------------------------


def create_token(api: TestClient, csrf: str, **overrides: Any) -> Response:
    body = {"name": "ci", "scopes": ["read"], "expires_in_days": 30} | overrides
    return api.post("/api/auth/tokens", json=body, headers={"X-CSRF-Token": csrf})


def test_step_up_required_after_max_age(api: TestClient, made: MadeUser, clock: Clock) -> None:
    csrf = logged_in(api, made, clock)
    clock.advance(minutes=6)

    response = create_token(api, csrf)

    assert response.status_code == 403
    assert error_code(response) == "step_up_required"


def test_step_up_fresh_code_accepted_then_expires(
    api: TestClient, made: MadeUser, clock: Clock
) -> None:
    csrf = logged_in(api, made, clock)
    clock.advance(minutes=6)

    stepped = api.post(
        "/api/auth/step-up", json={"code": made.code(clock.now)}, headers={"X-CSRF-Token": csrf}
    )
    created = create_token(api, csrf)
    clock.advance(minutes=5, seconds=1)
    late = create_token(api, csrf)

    assert stepped.status_code == 200
    assert created.status_code == 201
    assert error_code(late) == "step_up_required"


def test_step_up_reused_code_refused(api: TestClient, made: MadeUser, clock: Clock) -> None:
    csrf = logged_in(api, made, clock)  # spends the current step

    response = api.post(
        "/api/auth/step-up", json={"code": made.code(clock.now)}, headers={"X-CSRF-Token": csrf}
    )

    assert response.status_code == 403
    assert error_code(response) == "step_up_failed"


def test_api_token_shown_once_and_works_as_bearer(
    api: TestClient, made: MadeUser, clock: Clock
) -> None:
    csrf = logged_in(api, made, clock)

    created = create_token(api, csrf, scopes=["read"])
    plaintext = created.json()["token"]
    listed = api.get("/api/auth/tokens").json()
    api.cookies.clear()
    me = api.get("/api/auth/me", headers={"Authorization": f"Bearer {plaintext}"})

    assert created.status_code == 201
    assert plaintext.startswith("kluis_")
    assert "token" not in listed[0]
    assert plaintext not in str(listed)
    assert me.status_code == 200
    assert me.json()["auth"] == "api_token"
    assert me.json()["scopes"] == ["read"]


def test_api_token_bearer_needs_no_csrf(api: TestClient, made: MadeUser, clock: Clock) -> None:
    csrf = logged_in(api, made, clock)
    created = create_token(api, csrf).json()
    api.cookies.clear()
    bearer = {"Authorization": f"Bearer {created['token']}"}

    response = api.delete(f"/api/auth/tokens/{created['id']}", headers=bearer)

    assert response.status_code == 204
    assert api.get("/api/auth/me", headers=bearer).status_code == 401  # revoked at once


def test_api_token_cannot_mint_tokens(api: TestClient, made: MadeUser, clock: Clock) -> None:
    csrf = logged_in(api, made, clock)
    plaintext = create_token(api, csrf).json()["token"]
    api.cookies.clear()

    response = api.post(
        "/api/auth/tokens",
        json={"name": "x", "scopes": ["read"], "expires_in_days": 1},
        headers={"Authorization": f"Bearer {plaintext}"},
    )

    assert response.status_code == 403


def test_api_token_expired_401(api: TestClient, made: MadeUser, clock: Clock) -> None:
    csrf = logged_in(api, made, clock)
    plaintext = create_token(api, csrf, expires_in_days=1).json()["token"]
    api.cookies.clear()
    clock.advance(days=1)

    response = api.get("/api/auth/me", headers={"Authorization": f"Bearer {plaintext}"})

    assert response.status_code == 401


def test_api_token_scope_beyond_role_422(api: TestClient, made: MadeUser, clock: Clock) -> None:
    csrf = logged_in(api, made, clock)

    response = create_token(api, csrf, scopes=["admin"])

    assert response.status_code == 422
    assert error_code(response) == "invalid"


def test_api_token_revoke_other_users_404(
    api: TestClient, made: MadeUser, clock: Clock, db_session: Session, db_settings: Settings
) -> None:
    other = make_user(db_session, db_settings, role=Role.OUTPUT_CHECKER).user
    theirs, _ = apitokens.create_api_token(db_session, other, "x", ["read"], 1, db_settings)
    csrf = logged_in(api, made, clock)

    response = api.delete(f"/api/auth/tokens/{theirs.id}", headers={"X-CSRF-Token": csrf})

    assert response.status_code == 404
    assert theirs.revoked_at is None


# --- hostile input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "a", "password": "b"},
        {"username": "a" * 100_000, "password": "b", "code": "123456"},
        {"username": "a", "password": "p" * 100_000, "code": "123456"},
        {"username": "a", "password": "b", "code": 123456},
        {"username": "a", "password": "b", "code": "1" * 1000},
        {"username": ["a"], "password": "b", "code": "123456"},
        {"username": "a", "password": "b", "code": "123456", "remember": True},
    ],
)
def test_login_malformed_body_422(api: TestClient, body: dict[str, Any]) -> None:
    response = api.post("/api/auth/login", json=body)

    assert response.status_code == 422
    assert error_code(response) == "invalid"
    assert "p" * 100 not in response.text
    assert "a" * 100 not in response.text


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"\xff\xfe\x00",
        b"[]",
        b"null",
        b'{"username": "\\ud800", "password": "x", "code": "123456"}',
    ],
)
def test_login_garbage_body_4xx(api: TestClient, content: bytes) -> None:
    response = api.post(
        "/api/auth/login", content=content, headers={"Content-Type": "application/json"}
    )

    assert 400 <= response.status_code < 500
    assert "error" in response.json()


@pytest.mark.parametrize("username", ["\x00", "名前", "ﷺ" * 50, "admin' --", " ", "\u202eevil"])
def test_login_hostile_username_generic_401(api: TestClient, username: str) -> None:
    body = {"username": username, "password": "whatever", "code": "123456"}
    # ASCII-escaped JSON, as a hostile client may send it (a NUL travels as `\u0000`).
    response = api.post(
        "/api/auth/login", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 401
    assert response.json() == GENERIC


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer " + "x" * 10_000},
        {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        {"Authorization": "Bearer kluis_aaaaaaaa_" + "b" * 43},
        {"Cookie": f"{COOKIE}=" + "x" * 4000},
    ],
)
def test_me_bad_credentials_401(api: TestClient, headers: dict[str, str]) -> None:
    response = api.get("/api/auth/me", headers=headers)

    assert response.status_code == 401
    assert error_code(response) == "auth_failed"


@pytest.mark.parametrize(
    "path",
    [
        "/api/auth/sessions/abc",
        "/api/auth/sessions/99999999999999999999",
        "/api/auth/sessions/0",
        "/api/auth/tokens/-1",
    ],
)
def test_delete_bad_ids_422(api: TestClient, made: MadeUser, clock: Clock, path: str) -> None:
    csrf = logged_in(api, made, clock)

    response = api.delete(path, headers={"X-CSRF-Token": csrf})

    assert response.status_code == 422


def test_step_up_hostile_code_4xx(api: TestClient, made: MadeUser, clock: Clock) -> None:
    csrf = logged_in(api, made, clock)
    headers = {"X-CSRF-Token": csrf}

    too_long = api.post("/api/auth/step-up", json={"code": "9" * 10_000}, headers=headers)
    letters = api.post("/api/auth/step-up", json={"code": "abcdef"}, headers=headers)

    assert too_long.status_code == 422
    assert letters.status_code == 403


def test_api_token_hostile_create_422(api: TestClient, made: MadeUser, clock: Clock) -> None:
    csrf = logged_in(api, made, clock)

    for overrides in [
        {"name": "n" * 10_000},
        {"scopes": ["x" * 10_000]},
        {"scopes": ["read"] * 1000},
        {"expires_in_days": 10**30},
        {"expires_in_days": "soon"},
    ]:
        response = create_token(api, csrf, **overrides)
        assert response.status_code == 422, overrides
