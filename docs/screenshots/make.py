"""Screenshots of the portal's key pages for the docs, taken in real Chromium from a live server
with a few demo rows (projects made through the real domain functions, so their history is real):
`.venv/bin/python docs/screenshots/make.py` (rewrites the PNGs here).

Uses the browser tests' helpers (`tests/browser/live.py`) and factories, on a throwaway SQLite
database; needs Debian's `chromium`.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))

from browser.conftest import Portal, sign_in  # noqa: E402
from browser.live import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    bind_loopback,
    portal_settings,
    serve,
)
from factories import make_institution, make_totp_token, make_user  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from sqlalchemy import select  # noqa: E402

from orchestrator import applications, catalogue, costs, projects, requests  # noqa: E402
from orchestrator.db import make_engine  # noqa: E402
from orchestrator.models import RequestKind, Role, TokenState, User, UserStatus  # noqa: E402

WIDTH, HEIGHT = 1024, 720


def seed(portal: Portal) -> dict[str, object]:
    """Demo rows: two institutions, a steward, researchers, tokens in several states."""
    with portal.session() as session:
        today = datetime.now(UTC).date()
        uni = make_institution(session, name="Example University", country="NL")
        make_institution(
            session,
            name="Institut Exemple",
            country="BE",
            authorised_until=today + timedelta(days=700),
            allowed_networks=["192.0.2.0/24", "2001:db8::/32"],
        )
        steward = make_user(session, portal.settings, username="s.steward", role=Role.DATA_STEWARD)
        steward.user.full_name = "Sam Steward"
        researcher = make_user(session, portal.settings, username="j.devries", institution=uni)
        researcher.user.full_name = "Jan de Vries"
        researcher.user.email = "j.devries@example.org"
        for name, full in (("a.jansen", "Anna Jansen"), ("m.bakker", "Mohammed Bakker")):
            other = make_user(session, portal.settings, username=name, institution=uni)
            other.user.full_name = full
        pending = make_user(
            session,
            portal.settings,
            username="l.visser",
            institution=uni,
            with_token=False,
            status=UserStatus.PENDING,
            password=None,
        )
        pending.user.full_name = "Lotte Visser"
        for number in range(3):
            make_totp_token(session, portal.settings, serial=f"FT-2026-{number + 101:05d}")
        make_totp_token(session, portal.settings, serial="FT-2025-00042", state=TokenState.LOST)
        session.commit()
    return {"steward": steward, "researcher": researcher}


def seed_projects(portal: Portal, names: dict[str, str]) -> str:
    """An active project of j.devries with an extension and a new member asked for, and two
    applications waiting for review; returns the active project's code."""
    settings = portal.settings
    with portal.session() as session:
        session.info["settings"] = settings
        now = datetime.now(UTC)
        today = now.date()
        people = {
            name: session.scalars(select(User).where(User.username == name)).one()
            for name in names.values()
        }
        lead, steward = people[names["researcher"]], people[names["steward"]]
        versions = {
            dataset.code: dataset.versions[0]
            for dataset in catalogue.seed_demo_catalogue(session, settings)
        }
        costs.seed_demo_tariff(session)
        project = applications.apply_project(
            session,
            settings,
            actor=lead,
            now=now,
            title="Income mobility and health",
            purpose="Whether sudden drops in household income predict hospital admissions "
            "within two years, by age group and region.",
            compute_size="medium",
            start_date=today,
            end_date=date(today.year + 2, today.month, min(today.day, 28)),
            dataset_version_ids=[versions["DEMO_PERSONS"].id, versions["DEMO_INCOME"].id],
            member_ids=[people[names["colleague"]].id],
            legal_basis="Statistics Netherlands Act, article 41",
            expected_publications="Two journal articles and a working paper.",
        )
        projects.submit_project(session, project, lead, now, settings)
        projects.quote_project(session, project, steward, now, settings)
        projects.accept_quote(session, project, lead, now, settings)
        projects.approve_project(session, project, steward, now, settings)
        requests.create_request(
            session,
            project,
            lead,
            now,
            settings,
            kind=RequestKind.EXTENSION,
            new_end_date=project.end_date + timedelta(days=182),
            reason="The second wave of the health survey arrives half a year later.",
        )
        requests.create_request(
            session,
            project,
            lead,
            now,
            settings,
            kind=RequestKind.ADD_MEMBER,
            user_id=people[names["newcomer"]].id,
            reason="Takes over the regional analysis.",
        )
        for who, title, codes in (
            ("newcomer", "Commuting and firm productivity", ["DEMO_COMPANIES", "DEMO_PERSONS"]),
            ("colleague", "Income of young adults after graduation", ["DEMO_INCOME"]),
        ):
            other = applications.apply_project(
                session,
                settings,
                actor=people[names[who]],
                now=now,
                title=title,
                purpose="See the attached research plan.",
                compute_size="small",
                start_date=today + timedelta(days=30),
                end_date=today + timedelta(days=395),
                dataset_version_ids=[versions[code].id for code in codes],
            )
            projects.submit_project(session, other, people[names[who]], now, settings)
        session.commit()
        return project.code


def main() -> None:
    sock = bind_loopback()
    host, port = sock.getsockname()[:2]
    settings = portal_settings(Path(tempfile.mkdtemp()), f"http://{host}:{port}")
    with serve(settings, sock) as url, sync_playwright() as driver:
        portal = Portal(url, settings, make_engine(settings))
        people = seed(portal)
        code = seed_projects(
            portal,
            {
                "researcher": "j.devries",
                "colleague": "a.jansen",
                "newcomer": "m.bakker",
                "steward": "s.steward",
            },
        )
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        shots = [
            ("project.png", "researcher", f"/projects/{code}", WIDTH, "en-GB"),
            ("project-320px-nl.png", "researcher", f"/projects/{code}", 320, "nl-NL"),
            ("review-projects.png", "steward", "/review/projects", WIDTH, "en-GB"),
            ("review-requests.png", "steward", "/review/requests", WIDTH, "en-GB"),
            ("login.png", None, "/login", WIDTH, "en-GB"),
            ("login-320px.png", None, "/login", 320, "en-GB"),
            ("account.png", "researcher", "/account", WIDTH, "en-GB"),
            ("account-320px-nl.png", "researcher", "/account", 320, "nl-NL"),
            ("admin-users.png", "steward", "/admin/users", WIDTH, "en-GB"),
            ("admin-tokens.png", "steward", "/admin/tokens", WIDTH, "en-GB"),
        ]
        for name, who, path, width, locale in shots:
            context = browser.new_context(
                base_url=url, viewport={"width": width, "height": HEIGHT}, locale=locale
            )
            if who is not None:
                sign_in(context, portal, people[who], stepped_up=True)  # type: ignore[arg-type]
            page = context.new_page()
            page.goto(path)
            page.screenshot(path=str(HERE / name), full_page=True)
            context.close()
            print(HERE / name)
        browser.close()


if __name__ == "__main__":
    main()
