"""Accessibility smoke checks and small screens, in real Chromium: every page has a language, one
h1, a working skip link, visible focus and a label on every field; nothing overflows at 320 px;
Dutch is served to a Dutch browser; no page breaks its Content-Security-Policy."""

from __future__ import annotations

import pytest
from factories import MadeUser
from playwright.sync_api import Browser, Page, expect

from orchestrator.models import Role

from .conftest import Console, Portal, seed_user, sign_in

pytestmark = pytest.mark.browser

ANONYMOUS_PAGES = ["/login", "/activate?secret=unknown", "/no-such-page"]
RESEARCHER_PAGES = ["/account"]
STAFF_PAGES = ["/admin/institutions", "/admin/users", "/admin/tokens"]

# Problems a page has, as readable strings (an empty list is a pass).
AUDIT_JS = """() => {
  const problems = [];
  const lang = document.documentElement.getAttribute('lang');
  if (!lang) problems.push('html has no lang');
  const h1 = document.querySelectorAll('h1').length;
  if (h1 !== 1) problems.push(`${h1} h1 elements`);
  if (!document.title.trim()) problems.push('empty title');
  const skip = document.querySelector('a.skip-link');
  if (!skip || skip.getAttribute('href') !== '#main' || !document.getElementById('main'))
    problems.push('no skip link to #main');
  const fields = document.querySelectorAll('input:not([type=hidden]), select, textarea, output');
  for (const el of fields) {
    const byFor = el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`);
    if (!(byFor || el.closest('label') || el.getAttribute('aria-label')
          || el.getAttribute('aria-labelledby')))
      problems.push(`no label: ${el.outerHTML.slice(0, 80)}`);
  }
  for (const el of document.querySelectorAll('button, a[href]')) {
    if (!(el.textContent.trim() || el.getAttribute('aria-label')))
      problems.push(`no accessible name: ${el.outerHTML.slice(0, 80)}`);
  }
  const ids = [...document.querySelectorAll('[id]')].map(el => el.id);
  const twice = ids.filter((id, i) => ids.indexOf(id) !== i);
  if (twice.length) problems.push(`duplicate ids: ${twice}`);
  for (const el of document.querySelectorAll('[style], script')) {
    problems.push(`inline style or script: ${el.outerHTML.slice(0, 80)}`);
  }
  return problems;
}"""


def check_page(page: Page, path: str) -> list[str]:
    page.goto(path)
    problems: list[str] = page.evaluate(AUDIT_JS)
    # The skip link is the first stop of the keyboard and visible when focused.
    page.keyboard.press("Tab")
    focused = page.evaluate(
        """() => { const el = document.activeElement; const box = el.getBoundingClientRect();
                   const style = getComputedStyle(el);
                   return {cls: el.className, top: box.top, outline: style.outlineStyle}; }"""
    )
    if focused["cls"] != "skip-link" or focused["top"] < 0 or focused["outline"] == "none":
        problems.append(f"skip link not first or not visibly focused: {focused}")
    return [f"{path}: {problem}" for problem in problems]


def signed_in(page: Page, portal: Portal, role: Role) -> MadeUser:
    made = seed_user(portal, role=role)
    sign_in(page.context, portal, made, stepped_up=True)
    return made


@pytest.mark.parametrize(
    ("role", "paths"),
    [
        (None, ANONYMOUS_PAGES),
        (Role.RESEARCHER, RESEARCHER_PAGES),
        (Role.DATA_STEWARD, STAFF_PAGES),
    ],
)
def test_accessibility_pages_pass_smoke_checks(
    page: Page, portal: Portal, console: Console, role: Role | None, paths: list[str]
) -> None:
    if role is not None:
        signed_in(page, portal, role)

    problems = [problem for path in paths for problem in check_page(page, path)]

    assert problems == []
    # The only console errors allowed are the 404s of the deliberately missing pages.
    assert [e for e in console.errors if "404" not in e] == []


@pytest.mark.parametrize(
    ("role", "paths"),
    [
        (None, ANONYMOUS_PAGES),
        (Role.RESEARCHER, RESEARCHER_PAGES),
        (Role.DATA_STEWARD, STAFF_PAGES),
    ],
)
def test_small_screen_nothing_overflows_at_320px(
    browser: Browser, portal: Portal, role: Role | None, paths: list[str]
) -> None:
    context = browser.new_context(
        base_url=portal.url, viewport={"width": 320, "height": 640}, locale="en-GB"
    )
    try:
        page = context.new_page()
        if role is not None:
            signed_in(page, portal, role)
        widths = {}
        for path in paths:
            page.goto(path)
            widths[path] = page.evaluate("() => document.documentElement.scrollWidth")

        assert {path: width for path, width in widths.items() if width > 320} == {}
    finally:
        context.close()


def test_language_dutch_browser_gets_dutch_pages(browser: Browser, portal: Portal) -> None:
    context = browser.new_context(base_url=portal.url, locale="nl-NL")
    try:
        page = context.new_page()
        page.goto("/login")

        expect(page.locator("html")).to_have_attribute("lang", "nl")
        expect(page.get_by_role("heading", level=1)).to_have_text("Inloggen")
        expect(page.get_by_label("Wachtwoord")).to_be_visible()

        page.get_by_role("link", name="English").click()

        expect(page).to_have_url(f"{portal.url}/login")
        expect(page.locator("html")).to_have_attribute("lang", "en")
        expect(page.get_by_role("heading", level=1)).to_have_text("Log in")
    finally:
        context.close()
