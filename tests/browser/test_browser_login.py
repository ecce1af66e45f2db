"""The portal in real Chromium: logging in with a TOTP code, the generic failure, replay of a code,
logout, and CSRF refusal, against a live server on SQLite and PostgreSQL."""

from __future__ import annotations

import re

import pytest
from factories import MadeUser, make_user
from playwright.sync_api import Browser, Page, expect

from orchestrator.sessions import open_session

from .conftest import Console, Portal

pytestmark = pytest.mark.browser

GENERIC_FAILURE = "Login failed. Check your username, password and code, then try again."


def seed_researcher(portal: Portal) -> MadeUser:
    with portal.session() as session:
        made = make_user(session, portal.settings)
        session.commit()
    return made


def log_in(page: Page, made: MadeUser, code: str | None = None) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(made.username)
    page.get_by_label("Password").fill(made.password)
    page.get_by_label("Code").fill(code if code is not None else made.code())
    page.get_by_role("button", name="Log in").click()


def test_login_researcher_with_totp_code_lands_on_account(
    page: Page, portal: Portal, console: Console
) -> None:
    made = seed_researcher(portal)

    log_in(page, made)

    expect(page).to_have_url(f"{portal.url}/account")
    expect(page.get_by_role("heading", level=1)).to_have_text("My account")
    expect(page.locator("main")).to_contain_text(made.username)
    expect(page.locator("main")).to_contain_text(made.token.token.serial if made.token else "")
    assert console.errors == []  # no CSP violation, no failed resource


def test_login_wrong_code_fails_with_generic_message(page: Page, portal: Portal) -> None:
    made = seed_researcher(portal)

    log_in(page, made, code=made.code(steps=10))

    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.get_by_role("alert")).to_have_text(GENERIC_FAILURE)
    expect(page.get_by_label("Username")).to_have_value(made.username)
    expect(page.get_by_label("Password")).to_have_value("")


def test_login_wrong_password_fails_with_the_same_message(page: Page, portal: Portal) -> None:
    made = seed_researcher(portal)
    made.password = "not the password at all"

    log_in(page, made)

    expect(page.get_by_role("alert")).to_have_text(GENERIC_FAILURE)


def test_login_replayed_code_after_logout_fails(page: Page, portal: Portal) -> None:
    made = seed_researcher(portal)
    code = made.code()
    log_in(page, made, code)
    expect(page).to_have_url(f"{portal.url}/account")
    page.get_by_role("button", name="Log out", exact=True).click()
    expect(page).to_have_url(re.compile(r"/login\?done=logged_out$"))

    log_in(page, made, code)

    expect(page.get_by_role("alert")).to_have_text(GENERIC_FAILURE)


def test_logout_then_account_redirects_to_login(page: Page, portal: Portal) -> None:
    made = seed_researcher(portal)
    log_in(page, made)
    expect(page).to_have_url(f"{portal.url}/account")

    page.get_by_role("button", name="Log out", exact=True).click()

    expect(page.get_by_role("status")).to_have_text("You have been logged out.")
    page.goto("/account")
    expect(page).to_have_url(f"{portal.url}/login?next=%2Faccount")
    expect(page.get_by_role("heading", level=1)).to_have_text("Log in")


def test_login_next_brings_the_user_back(page: Page, portal: Portal) -> None:
    made = seed_researcher(portal)
    page.goto("/account")
    expect(page).to_have_url(re.compile(r"/login\?next="))

    page.get_by_label("Username").fill(made.username)
    page.get_by_label("Password").fill(made.password)
    page.get_by_label("Code").fill(made.code())
    page.get_by_role("button", name="Log in").click()

    expect(page).to_have_url(f"{portal.url}/account")


def test_logout_everywhere_ends_other_sessions(
    page: Page, portal: Portal, browser: Browser
) -> None:
    made = seed_researcher(portal)
    log_in(page, made)
    # A second browser logged in earlier (a code is spent once, so its session is made directly).
    with portal.session() as session:
        _row, secret = open_session(session, made.user, "127.0.0.1", "other", portal.settings)
        session.commit()
    other = browser.new_context(base_url=portal.url)
    try:
        other.add_cookies([{"name": "kluis_session", "value": secret, "url": portal.url}])
        second = other.new_page()
        second.goto("/account")
        expect(second.get_by_role("heading", level=1)).to_have_text("My account")
        page.reload()
        expect(page.get_by_role("button", name=re.compile(r"^End session"))).to_have_count(1)

        page.get_by_role("button", name="Log out everywhere").click()

        expect(page).to_have_url(re.compile(r"/login\?done=logged_out$"))
        second.goto("/account")
        expect(second).to_have_url(re.compile(r"/login\?next="))
    finally:
        other.close()


def test_csrf_form_post_without_token_is_refused(page: Page, portal: Portal) -> None:
    made = seed_researcher(portal)
    log_in(page, made)
    expect(page).to_have_url(f"{portal.url}/account")
    # What a forged form looks like: everything but the token.
    page.locator("input[name=csrf_token]").evaluate_all("els => els.forEach(e => e.remove())")

    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Log out everywhere").click()

    assert posted.value.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    page.goto("/account")  # the session is still there: nothing happened
    expect(page.get_by_role("heading", level=1)).to_have_text("My account")


def test_csrf_login_post_without_token_is_refused(page: Page, portal: Portal) -> None:
    made = seed_researcher(portal)
    page.goto("/login")
    page.locator("input[name=csrf_token]").evaluate("e => e.remove()")
    page.get_by_label("Username").fill(made.username)
    page.get_by_label("Password").fill(made.password)
    page.get_by_label("Code").fill(made.code())

    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Log in").click()

    assert posted.value.status == 403
    expect(page.locator("main")).to_contain_text("This form has expired. Please try again.")
    page.goto("/account")
    expect(page).to_have_url(re.compile(r"/login\?next="))  # no session was opened
