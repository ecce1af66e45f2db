"""Staff pages in real Chromium: creating an account shows its activation link once, the link sets
a password, changes ask for a fresh code when the session has not stepped up, and the token
inventory imports a PSKC file, lends a token and takes it back."""

from __future__ import annotations

import base64
import re
import secrets
from datetime import date, timedelta

import pytest
from factories import make_institution
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from orchestrator.models import Role, TokenState, TotpToken, User, UserStatus

from .conftest import Portal, seed_user, sign_in

pytestmark = pytest.mark.browser


def new_institution(portal: Portal) -> str:
    name = f"Institute of Examples {secrets.token_hex(3)}"
    with portal.session() as session:
        make_institution(session, name=name)
        session.commit()
    return name


def test_staff_creates_account_and_activation_sets_password(
    page: Page, portal: Portal, browser: Browser
) -> None:
    steward = seed_user(portal, role=Role.DATA_STEWARD)
    institution = new_institution(portal)
    username = f"new-{secrets.token_hex(4)}"
    sign_in(page.context, portal, steward, stepped_up=True)
    page.goto("/admin/users")

    page.get_by_label("Username").fill(username)
    page.get_by_label("Full name").fill("Nieuwe Onderzoeker")
    page.get_by_label("E-mail").fill("nieuw@example.org")
    page.get_by_label("Role").select_option("researcher")
    page.get_by_label("Institution").select_option(label=institution)
    page.get_by_role("button", name="Create").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Activation link")
    link = page.locator("#activation-link").inner_text().strip()
    assert link.startswith(f"{portal.url}/activate?secret=")

    visitor = browser.new_context(locale="en-GB")
    try:
        activation = visitor.new_page()
        activation.goto(link)
        activation.get_by_label("New password", exact=True).fill("paarse olifant op de fiets")
        activation.get_by_label("Repeat the new password").fill("paarse olifant op de fiets")
        activation.get_by_role("button", name="Set password").click()

        expect(activation).to_have_url(f"{portal.url}/login?done=activated")
        expect(activation.get_by_role("status")).to_contain_text("Your password is set")
        activation.goto(link)  # a link works once
        expect(activation.locator("main")).to_contain_text("invalid, used or expired")
    finally:
        visitor.close()
    with portal.session() as session:
        user = session.scalars(select(User).where(User.username == username)).one()
        assert user.status is UserStatus.ACTIVE
        assert user.password_hash is not None


def test_staff_sensitive_change_without_recent_step_up_asks_for_a_code(
    page: Page, portal: Portal
) -> None:
    steward = seed_user(portal, role=Role.DATA_STEWARD)
    researcher = seed_user(portal)
    sign_in(page.context, portal, steward, stepped_up=False)
    page.goto(f"/admin/users/{researcher.user.id}")
    page.get_by_label("New status").select_option("suspended")
    page.get_by_label("Reason").fill("left the project")
    page.get_by_role("button", name="Change status").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Confirm with your token")

    page.get_by_label("Code").fill(steward.code(steps=10))
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("alert")).to_have_text("The code was not accepted.")

    page.get_by_label("Code").fill(steward.code())
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    expect(page.locator("main")).to_contain_text("suspended")
    with portal.session() as session:
        user = session.get(User, researcher.user.id)
        assert user is not None
        assert user.status is UserStatus.SUSPENDED


def plain_pskc(serial: str, seed: bytes) -> bytes:
    """A vendor seed file with one TOTP key in plain text (RFC 6030 section 6)."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
  <KeyPackage>
    <DeviceInfo><Manufacturer>Example</Manufacturer><SerialNo>{serial}</SerialNo></DeviceInfo>
    <Key Id="{serial}" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp">
      <AlgorithmParameters><ResponseFormat Length="6" Encoding="DECIMAL"/></AlgorithmParameters>
      <Data>
        <Secret><PlainValue>{base64.b64encode(seed).decode()}</PlainValue></Secret>
        <TimeInterval><PlainValue>30</PlainValue></TimeInterval>
      </Data>
    </Key>
  </KeyPackage>
</KeyContainer>
""".encode()


def test_staff_imports_assigns_and_takes_back_a_token(page: Page, portal: Portal) -> None:
    steward = seed_user(portal, role=Role.DATA_STEWARD)
    researcher = seed_user(portal, with_token=False)
    serial = f"HW{secrets.token_hex(4).upper()}"
    sign_in(page.context, portal, steward, stepped_up=True)
    page.goto("/admin/tokens")

    page.get_by_label("PSKC file").set_input_files(
        {"name": "vendor.pskc", "mimeType": "text/xml", "buffer": plain_pskc(serial, b"k" * 20)}
    )
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_role("status")).to_have_text("1 tokens imported.")

    page.get_by_label("Token in stock").fill(serial)
    page.get_by_label("To account").fill(researcher.username)
    page.get_by_role("button", name="Assign").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    row = page.get_by_role("row").filter(has_text=serial)
    expect(row).to_contain_text("on loan")
    expect(row).to_contain_text(researcher.username)

    row.get_by_role("button", name=re.compile(r"^Returned")).click()
    expect(page.get_by_role("row").filter(has_text=serial)).to_contain_text("returned")
    with portal.session() as session:
        token = session.scalars(select(TotpToken).where(TotpToken.serial == serial)).one()
        assert token.state is TokenState.RETURNED


def test_researcher_cannot_open_staff_pages(page: Page, portal: Portal) -> None:
    researcher = seed_user(portal)
    sign_in(page.context, portal, researcher, stepped_up=True)

    for path in ("/admin/users", "/admin/tokens", "/admin/institutions"):
        response = page.goto(path)

        assert response is not None
        assert response.status == 403
        expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    page.goto("/account")
    menu = page.get_by_role("navigation", name="Main menu").get_by_role("link")
    expect(menu).to_have_text(["My projects", "Catalogue", "My account"])


def test_staff_creates_and_extends_an_institution(page: Page, portal: Portal) -> None:
    steward = seed_user(portal, role=Role.DATA_STEWARD)
    name = f"Hogeschool Voorbeeld {secrets.token_hex(3)}"
    sign_in(page.context, portal, steward, stepped_up=True)
    page.goto("/admin/institutions")
    today = date.today()

    page.get_by_label("Name").fill(name)
    page.get_by_label("Country").select_option("NL")
    page.get_by_label("Authorised from").fill(today.isoformat())
    page.get_by_label("Authorised until").fill((today + timedelta(days=365)).isoformat())
    page.get_by_label("Allowed networks").fill("192.0.2.0/24\n198.51.100.7/32")
    page.get_by_role("button", name="Create").click()

    expect(page.get_by_role("status")).to_have_text("Saved.")
    row = page.get_by_role("row").filter(has_text=name)
    expect(row).to_contain_text("Valid")
    expect(row).to_contain_text("192.0.2.0/24, 198.51.100.7/32")

    row.get_by_role("link", name=name).click()
    later = today + timedelta(days=700)
    page.get_by_label("Authorised until").fill(later.isoformat())
    page.get_by_role("button", name="Save").click()

    expect(page.get_by_role("status")).to_have_text("Saved.")
    expect(page.get_by_role("row").filter(has_text=name)).to_contain_text(later.isoformat())
