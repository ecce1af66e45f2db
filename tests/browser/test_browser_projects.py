"""The project pages in real Chromium: a lead applies for a project with two datasets and a
co-researcher and submits it; a data steward quotes it; the lead accepts the quote; the steward
approves it with a fresh code; the project is active with its grants; the lead asks for an
extension and the steward approves it. Plus the accessibility and 320 px checks of these pages.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, timedelta

import pytest
from factories import MadeUser, make_user
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect
from project_factories import make_dataset_version, make_project, make_tariff
from sqlalchemy import select

from orchestrator.models import Project, ProjectState, Role

from .conftest import Console, Portal, sign_in
from .test_browser_accessibility import check_page

pytestmark = pytest.mark.browser


@dataclass
class Cast:
    lead: MadeUser
    colleague: MadeUser
    steward: MadeUser
    datasets: list[str]  # dataset codes


def seed_cast(portal: Portal) -> Cast:
    """A lead and a colleague of one institution, a data steward, two datasets and a tariff."""
    suffix = secrets.token_hex(3).upper()
    codes = [f"PERSONS_{suffix}", f"INCOME_{suffix}"]
    with portal.session() as session:
        lead = make_user(session, portal.settings)
        colleague = make_user(session, portal.settings, institution=lead.user.institution)
        steward = make_user(session, portal.settings, role=Role.DATA_STEWARD)
        make_tariff(session)
        for code, topic in zip(codes, ("persons", "income"), strict=True):
            make_dataset_version(session, code=code, topic=topic, label="2025V1")
        session.commit()
    return Cast(lead, colleague, steward, codes)


def context_of(browser: Browser, portal: Portal, made: MadeUser, *, stepped_up: bool) -> Page:
    context = browser.new_context(base_url=portal.url, locale="en-GB")
    context.set_default_timeout(15_000)
    sign_in(context, portal, made, stepped_up=stepped_up)
    return context.new_page()


def close(*pages: Page) -> None:
    contexts: list[BrowserContext] = [page.context for page in pages]
    for context in contexts:
        context.close()


def panel(page: Page, name: str) -> Locator:
    """The page's section under the heading `name` (its table region has the same name)."""
    return page.get_by_role("region", name=name, exact=True).first


def state_badge(page: Page) -> str:
    return page.locator(".facts dd .badge").first.inner_text().strip()


def test_project_application_to_approval_and_extension(
    browser: Browser, portal: Portal, page: Page, console: Console
) -> None:
    cast = seed_cast(portal)
    sign_in(page.context, portal, cast.lead, stepped_up=False)
    steward = context_of(browser, portal, cast.steward, stepped_up=False)
    start = date.today()
    end = start + timedelta(days=365)
    try:
        # The lead applies: two datasets, one co-researcher.
        page.goto("/projects")
        page.get_by_role("link", name="Apply for a project").click()
        page.get_by_label("Title").fill("Income mobility and health")
        page.get_by_label("Purpose").fill("Whether income shocks predict hospital admissions.")
        page.get_by_label("Start date").fill(start.isoformat())
        page.get_by_label("End date").fill(end.isoformat())
        page.get_by_label("Compute size").select_option("medium")
        for code in cast.datasets:
            page.get_by_label(code).check()
        page.get_by_label("Co-researchers").fill(cast.colleague.username)
        page.get_by_label("Legal basis").fill("Statistics Netherlands Act, art. 41")
        page.get_by_label("Expected publications").fill("Two papers")
        page.get_by_role("button", name="Save draft").click()

        expect(page.get_by_role("status")).to_have_text("Saved.")
        code = page.get_by_role("heading", level=1).inner_text().removeprefix("Project ")
        assert state_badge(page) == "draft"
        members = panel(page, "Members")
        expect(members).to_contain_text(cast.colleague.username)
        expect(members).to_contain_text("project lead")
        page.get_by_role("button", name="Submit for review").click()
        expect(page.get_by_role("status")).to_have_text("Saved.")
        assert state_badge(page) == "submitted"

        # The steward quotes it from the queue.
        steward.goto("/review/projects")
        card = steward.get_by_role("region", name=code)
        card.get_by_role("button", name="Make the quote").click()
        expect(steward.get_by_role("status")).to_have_text("Saved.")
        expect(steward.get_by_role("region", name=code)).to_have_count(0)

        # The lead accepts the quote.
        page.reload()
        assert state_badge(page) == "quoted"
        quote = panel(page, "Quote")
        expect(quote).to_contain_text("Base fee")
        expect(page.locator("#quote-total")).to_contain_text("EUR")
        page.get_by_role("button", name="Accept the quote").click()
        expect(page.get_by_role("status")).to_have_text("Saved.")
        assert state_badge(page) == "accepted"

        # The steward approves: that grants data access, so it asks for a fresh code.
        steward.goto("/review/projects?state=accepted")
        steward.get_by_role("region", name=code).get_by_role("button", name="Approve").click()
        expect(steward.get_by_role("heading", level=1)).to_have_text("Confirm with your token")
        steward.get_by_label("Code").fill(cast.steward.code())
        steward.get_by_role("button", name="Confirm").click()
        expect(steward.get_by_role("status")).to_have_text("Saved.")

        # Active at once (its start date is today), with both datasets granted.
        page.reload()
        assert state_badge(page) == "active"
        datasets = panel(page, "Datasets")
        for dataset in cast.datasets:
            expect(datasets.get_by_role("row").filter(has_text=dataset)).to_contain_text("granted")
        history = panel(page, "History")
        expect(history).to_contain_text("Approved")
        expect(history).to_contain_text("Dataset access granted")

        # The lead asks for three more months; the steward approves.
        later = end + timedelta(days=90)
        page.get_by_label("New end date").fill(later.isoformat())
        extension = page.get_by_role("region", name="Request an extension")
        extension.get_by_label("Reason").fill("The second wave arrives later.")
        page.get_by_role("button", name="Request extension").click()
        expect(page.get_by_role("status")).to_have_text(
            "Your request has been sent to the data stewards."
        )
        requests = panel(page, "Requests")
        expect(requests).to_contain_text(f"Extension to {later.isoformat()}")
        expect(requests).to_contain_text("awaiting decision")

        steward.goto("/review/requests")
        steward.get_by_role("button", name=f"Approve: Extension to {later.isoformat()}").click()
        if steward.get_by_role("heading", level=1).inner_text() == "Confirm with your token":
            steward.get_by_label("Code").fill(cast.steward.code(steps=1))
            steward.get_by_role("button", name="Confirm").click()
        expect(steward.get_by_role("status")).to_have_text("Saved.")

        page.reload()
        expect(page.locator("#end-date")).to_have_text(later.isoformat())
        expect(panel(page, "Requests")).to_contain_text("approved")
        expect(panel(page, "History")).to_contain_text("End date moved")
    finally:
        close(steward)

    with portal.session() as session:
        project = session.scalars(select(Project).where(Project.code == code)).one()
        assert project.state is ProjectState.ACTIVE
        assert project.end_date == later
        assert len([g for g in project.grants if g.revoked_at is None]) == 2
    assert console.errors == []


# --- accessibility and small screens --------------------------------------------------------------


@dataclass
class Pages:
    lead: MadeUser
    steward: MadeUser
    lead_paths: list[str]
    steward_paths: list[str]


def seed_pages(portal: Portal) -> Pages:
    """An active project with a pending request, a submitted one, and the people to see them."""
    with portal.session() as session:
        lead = make_user(session, portal.settings)
        colleague = make_user(session, portal.settings, institution=lead.user.institution)
        steward = make_user(session, portal.settings, role=Role.DATA_STEWARD)
        tariff = make_tariff(session)
        versions = [make_dataset_version(session, topic=t) for t in ("persons", "income")]
        make_dataset_version(session, topic="housing")
        active = make_project(
            session,
            state=ProjectState.ACTIVE,
            lead=lead.user,
            members=[colleague.user],
            versions=versions,
            tariff=tariff,
            title="Een project met een tamelijk lange titel over inkomensmobiliteit",
        )
        submitted = make_project(session, state=ProjectState.SUBMITTED, lead=lead.user)
        session.commit()
    return Pages(
        lead,
        steward,
        ["/catalogue", "/projects", "/projects/new", f"/projects/{active.code}"],
        [
            "/review/projects",
            "/review/projects?state=active",
            "/review/requests",
            f"/projects/{submitted.code}",
        ],
    )


def test_accessibility_project_pages_pass_smoke_checks(
    browser: Browser, portal: Portal, console: Console
) -> None:
    pages = seed_pages(portal)
    problems: list[str] = []
    for made, paths in ((pages.lead, pages.lead_paths), (pages.steward, pages.steward_paths)):
        page = context_of(browser, portal, made, stepped_up=True)
        page.on("console", console.record)
        try:
            problems += [problem for path in paths for problem in check_page(page, path)]
        finally:
            close(page)

    assert problems == []
    assert console.errors == []


@pytest.mark.parametrize("locale", ["en-GB", "nl-NL"])
def test_small_screen_project_pages_fit_320px(
    browser: Browser, portal: Portal, locale: str
) -> None:
    pages = seed_pages(portal)
    widths: dict[str, int] = {}
    for made, paths in ((pages.lead, pages.lead_paths), (pages.steward, pages.steward_paths)):
        context = browser.new_context(
            base_url=portal.url, viewport={"width": 320, "height": 640}, locale=locale
        )
        try:
            sign_in(context, portal, made, stepped_up=True)
            page = context.new_page()
            for path in paths:
                page.goto(path)
                widths[path] = page.evaluate("() => document.documentElement.scrollWidth")
        finally:
            context.close()

    assert {path: width for path, width in widths.items() if width > 320} == {}
