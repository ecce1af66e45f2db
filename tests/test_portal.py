"""The portal without a browser: redirect targets, CSRF on every unsafe route, HTML errors for
browser routes and JSON for the API, the security headers, and a complete Dutch catalogue."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from factories import MadeUser, make_institution, make_user
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from orchestrator.api.app import create_app
from orchestrator.api.deps import get_session, session_cookie_name
from orchestrator.config import Settings
from orchestrator.models import Role, TokenKind, TokenState, UserStatus
from orchestrator.sessions import open_session
from orchestrator.web import (
    i18n,
    pages_account,
    pages_admin,
    pages_auth,
    pages_tokens,
    portal,
    rendering,
)
from orchestrator.web.browser import safe_next
from orchestrator.web.portal import PortalRoute

WEB = Path(portal.__file__).parent
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def browser_client(app: FastAPI) -> Iterator[TestClient]:
    """Over https, so the `Secure` `__Host-` cookies of the default settings travel."""
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        yield client


def sign_in(client: TestClient, session: Session, settings: Settings, made: MadeUser) -> None:
    row, secret = open_session(session, made.user, "testclient", "test", settings)
    row.stepped_up_at = row.created_at
    session.flush()
    client.cookies.set(session_cookie_name(settings), secret)


@pytest.mark.parametrize(
    "target", ["/account", "/admin/users?q=a%20b", "/login?next=%2Faccount", "/a/b/c#frag"]
)
def test_safe_next_keeps_same_origin_paths(target: str) -> None:
    assert safe_next(target, "/home") == target


@pytest.mark.parametrize(
    "target",
    [
        "",
        "account",
        "//evil.example/",
        "/\\evil.example/",
        "/\t/evil.example/",
        "/\n/evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "\\\\evil.example",
        "/" + "a" * 2000,
    ],
)
def test_safe_next_refuses_other_origins(target: str) -> None:
    assert safe_next(target, "/home") == "/home"


@pytest.mark.parametrize(
    ("cookie", "header", "expected"),
    [
        (None, None, "en"),
        (None, "nl-NL,nl;q=0.9,en;q=0.8", "nl"),
        (None, "de-DE,en;q=0.5,nl;q=0.7", "nl"),
        (None, "nl;q=0, en", "en"),
        ("en", "nl", "en"),
        ("xx", "nl", "nl"),
        (None, "garbage;q=abc,,;", "en"),
    ],
)
def test_language_choice_cookie_then_accept_language(
    cookie: str | None, header: str | None, expected: str
) -> None:
    assert i18n.choose_language(cookie, header) == expected


def _message_ids() -> set[str]:
    """Every message id the portal shows: `_()` literals in templates and page modules, plus
    the ids it passes through variables (notices, error titles, menu and move labels, enums)."""
    literal = re.compile(r"""_\(\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')""")
    ids: set[str] = set()
    for path in [*WEB.glob("templates/*.html"), *WEB.glob("*.py")]:
        for match in literal.finditer(path.read_text()):
            ids.add(match.group(1) or match.group(2))
    ids |= set(rendering.NOTICES.values())
    ids |= {text for pair in portal._PAGES.values() for text in pair}
    ids |= {item.label for item in rendering.STAFF_MENU}
    ids |= set(pages_tokens.MOVE_LABELS.values())
    ids |= {pages_auth.LOGIN_FAILED, pages_auth.TOO_MANY}
    for enum in (Role, UserStatus, TokenState, TokenKind):
        ids |= {member.value for member in enum}
    return ids


def test_catalogue_has_dutch_for_every_message() -> None:
    missing = sorted(_message_ids() - set(i18n.DUTCH))

    assert missing == []


def test_catalogue_placeholders_match() -> None:
    placeholder = re.compile(r"%\((\w+)\)s")
    wrong = {
        message: dutch
        for message, dutch in i18n.DUTCH.items()
        if set(placeholder.findall(message)) != set(placeholder.findall(dutch))
    }

    assert wrong == {}


def test_login_page_has_portal_csp_and_presession_cookie(browser_client: TestClient) -> None:
    response = browser_client.get("/login", headers={"accept-language": "nl"})

    assert response.status_code == 200
    assert response.headers["content-security-policy"] == rendering.PORTAL_CSP
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert '<html lang="nl">' in response.text
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-kluis_csrf=")
    assert "HttpOnly" in cookie
    assert "Secure" in cookie
    assert "samesite=strict" in cookie.lower()


def test_login_post_without_presession_token_is_refused(browser_client: TestClient) -> None:
    browser_client.get("/login")

    response = browser_client.post("/login", data={"username": "x", "password": "y", "code": "1"})

    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "This form has expired" in response.text


def test_login_post_with_token_of_another_browser_is_refused(
    browser_client: TestClient, app: FastAPI
) -> None:
    with TestClient(app, base_url="https://testserver") as other:
        foreign = CSRF_FIELD.search(other.get("/login").text)
    browser_client.get("/login")
    assert foreign is not None

    response = browser_client.post("/login", data={"csrf_token": foreign.group(1)})

    assert response.status_code == 403


def test_login_ignores_a_foreign_next(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    made = make_user(db_session, db_settings)
    page = browser_client.get("/login")
    token = CSRF_FIELD.search(page.text)
    assert token is not None

    response = browser_client.post(
        "/login",
        data={
            "csrf_token": token.group(1),
            "username": made.username,
            "password": made.password,
            "code": made.code(),
            "next": "//evil.example/",
        },
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/account"
    assert session_cookie_name(db_settings) in response.headers["set-cookie"]


@pytest.mark.parametrize("path", ["/account", "/admin/users", "/admin/tokens?state=lost"])
def test_pages_without_session_redirect_to_login(browser_client: TestClient, path: str) -> None:
    response = browser_client.get(path)

    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=%2F")


def test_every_unsafe_portal_route_refuses_a_missing_csrf_token(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    sign_in(browser_client, db_session, db_settings, make_user(db_session, db_settings))
    unsafe = [
        route.path.replace("{", "").replace("}", "").replace("_id", "1")
        for module in (pages_auth, pages_account, pages_admin, pages_tokens)
        for route in module.router.routes
        if isinstance(route, PortalRoute) and route.methods & {"POST", "PUT", "PATCH", "DELETE"}
    ]
    assert len(unsafe) >= 10  # the list is really the portal's forms

    answers = {path: browser_client.post(path, data={"x": "1"}) for path in unsafe}

    refused = {
        path: answer.status_code
        for path, answer in answers.items()
        if "CSRF token" in answer.text or "This form has expired" in answer.text
    }
    assert refused == dict.fromkeys(unsafe, 403)


def test_staff_page_forbidden_for_researcher_as_html(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    sign_in(browser_client, db_session, db_settings, make_user(db_session, db_settings))

    response = browser_client.get("/admin/users")

    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1>Not allowed</h1>" in response.text


def test_errors_are_html_for_browsers_and_json_for_the_api(browser_client: TestClient) -> None:
    page = browser_client.get("/no-such-page", headers={"accept": "text/html"})
    api = browser_client.get("/api/no-such-thing", headers={"accept": "text/html"})
    plain = browser_client.get("/no-such-page", headers={"accept": "application/json"})

    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == rendering.PORTAL_CSP
    assert api.status_code == 404
    assert api.json()["error"]["code"] == "not_found"
    assert plain.json()["error"]["code"] == "not_found"


def test_unexpected_error_is_a_html_500_with_a_reference(app: FastAPI) -> None:
    router = APIRouter(route_class=PortalRoute)

    @router.get("/account/broken")
    def broken() -> None:
        raise RuntimeError("boom")

    app.include_router(router)
    with TestClient(app, base_url="https://testserver") as client:
        response = client.get("/account/broken", headers={"x-request-id": "ref-123"})

    assert response.status_code == 500
    assert "ref-123" in response.text
    assert "boom" not in response.text


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/"])
def test_language_switch_sets_cookie_and_stays_on_this_site(
    browser_client: TestClient, target: str
) -> None:
    response = browser_client.get("/language/nl", params={"next": target})

    assert response.status_code == 303
    assert response.headers["location"] == "/"
    assert response.headers["set-cookie"].startswith("lang=nl")


def test_staff_creates_account_and_sees_link_once(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    steward = make_user(db_session, db_settings, role=Role.DATA_STEWARD)
    sign_in(browser_client, db_session, db_settings, steward)
    token = CSRF_FIELD.search(browser_client.get("/admin/users").text)
    assert token is not None

    response = browser_client.post(
        "/admin/users",
        data={
            "csrf_token": token.group(1),
            "username": "new.steward",
            "full_name": "New Steward",
            "email": "new@example.org",
            "role": "data_steward",
        },
    )

    assert response.status_code == 200
    assert re.search(r"/activate\?secret=[\w-]{20,}", response.text)
    listing = browser_client.get("/admin/users").text
    assert "new.steward" in listing
    assert "activate?secret" not in listing


def test_software_token_enrolment_shows_qr_code_once(
    db_session: Session, db_settings: Settings
) -> None:
    settings = db_settings.model_copy(update={"software_tokens_enabled": True})
    app = create_app(settings)
    app.dependency_overrides[get_session] = lambda: db_session
    steward = make_user(db_session, settings, role=Role.DATA_STEWARD)
    researcher = make_user(db_session, settings, with_token=False)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        sign_in(client, db_session, settings, steward)
        page = client.get(f"/admin/users/{researcher.user.id}")
        token = CSRF_FIELD.search(page.text)
        assert token is not None

        response = client.post(
            f"/admin/users/{researcher.user.id}/software-token",
            data={"csrf_token": token.group(1)},
        )
        again = client.get(f"/admin/users/{researcher.user.id}")

    assert response.status_code == 200
    assert 'src="data:image/svg+xml;base64,' in response.text
    assert "otpauth://totp/" in response.text
    assert "otpauth://" not in again.text
    assert "Enrol a software token" not in again.text  # one token per account


def test_login_throttled_shows_the_form_with_429(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    made = make_user(db_session, db_settings)
    statuses = []
    for _attempt in range(10):
        token = CSRF_FIELD.search(browser_client.get("/login").text)
        assert token is not None
        answer = browser_client.post(
            "/login",
            data={"csrf_token": token.group(1), "username": made.username, "password": "wrong"},
        )
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            break

    assert statuses[-1] == 429
    assert set(statuses[:-1]) == {401}
    assert "Too many attempts" in answer.text
    assert int(answer.headers["retry-after"]) >= 1
    assert '<form class="stack narrow" method="post" action="/login"' in answer.text


def test_institution_edit_with_a_stale_version_is_a_409_page(
    browser_client: TestClient, db_session: Session, db_settings: Settings
) -> None:
    sign_in(
        browser_client,
        db_session,
        db_settings,
        make_user(db_session, db_settings, role=Role.DATA_STEWARD),
    )
    institution = make_institution(db_session)
    form = browser_client.get(f"/admin/institutions/{institution.id}").text
    token = CSRF_FIELD.search(form)
    assert token is not None
    institution.name = "Renamed meanwhile"
    db_session.flush()  # someone else saved first: the version moved on

    response = browser_client.post(
        f"/admin/institutions/{institution.id}",
        data={
            "csrf_token": token.group(1),
            "version": "1",
            "name": "Mine",
            "country": "NL",
            "authorised_from": institution.authorised_from.isoformat(),
            "authorised_until": institution.authorised_until.isoformat(),
        },
    )

    assert response.status_code == 409
    assert "reload it and apply your change again" in response.text
    assert 'href="/admin/institutions"' in response.text
