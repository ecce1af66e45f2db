"""Institutions: country allow-list, authorisation period, allowed networks, optimistic locking."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from admin_factories import make_institution, make_user
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import institutions
from orchestrator.config import Environment, Settings
from orchestrator.errors import Conflict, Invalid, NotFound
from orchestrator.models import AuditEvent, Institution, Role

FROM = date(2026, 1, 1)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(environment=Environment.TEST, data_dir=tmp_path)


def create(session: Session, settings: Settings, **overrides: object) -> Institution:
    fields: dict[str, object] = {
        "name": "Erasmus Institute",
        "country": "NL",
        "authorised_from": FROM,
        "authorised_until": date(2028, 12, 31),
        "allowed_networks": [],
    }
    fields.update(overrides)
    return institutions.create_institution(session, settings, **fields)  # type: ignore[arg-type]


def last_event(session: Session) -> AuditEvent:
    return session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).one()


def test_institutions_create_valid_is_audited(db_session: Session, settings: Settings) -> None:
    steward = make_user(db_session, role=Role.DATA_STEWARD)

    institution = create(db_session, settings, country=" nl ", actor=steward)

    assert institution.country == "NL"
    event = last_event(db_session)
    assert event.action == "institution_created"
    assert event.actor == steward.username
    assert event.object_id == str(institution.id)
    assert event.details["country"] == "NL"


@pytest.mark.parametrize("country", ["US", "CN", "RU", "IN"])
def test_institutions_country_not_adequate_refused(
    db_session: Session, settings: Settings, country: str
) -> None:
    with pytest.raises(Invalid, match="GDPR-adequate") as caught:
        create(db_session, settings, country=country)

    assert caught.value.details["rule"] == "adequate_country"


@pytest.mark.parametrize("country", ["", "N", "NLD", "1A", "ÑL", "N\u200bL"])
def test_institutions_country_not_alpha_2_refused(
    db_session: Session, settings: Settings, country: str
) -> None:
    with pytest.raises(Invalid, match="alpha-2"):
        create(db_session, settings, country=country)


def test_institutions_country_list_is_configuration(db_session: Session, tmp_path: Path) -> None:
    settings = Settings(environment=Environment.TEST, data_dir=tmp_path, adequate_countries=["US"])

    assert create(db_session, settings, country="us").country == "US"
    with pytest.raises(Invalid, match="GDPR-adequate"):
        create(db_session, settings, name="Other", country="NL")


def test_institutions_three_years_exactly_allowed(db_session: Session, settings: Settings) -> None:
    institution = create(db_session, settings, authorised_until=date(2029, 1, 1))

    assert institution.authorised_until == date(2029, 1, 1)


def test_institutions_more_than_three_years_refused(
    db_session: Session, settings: Settings
) -> None:
    with pytest.raises(Invalid, match="at most 3 years") as caught:
        create(db_session, settings, authorised_until=date(2029, 1, 2))

    assert caught.value.details["rule"] == "max_authorisation_years"


def test_institutions_leap_day_start_ends_on_28_february(
    db_session: Session, settings: Settings
) -> None:
    with pytest.raises(Invalid, match="2031-02-28"):
        create(
            db_session,
            settings,
            authorised_from=date(2028, 2, 29),
            authorised_until=date(2031, 3, 1),
        )


@pytest.mark.parametrize("until", [FROM, date(2025, 12, 31)])
def test_institutions_until_not_after_from_refused(
    db_session: Session, settings: Settings, until: date
) -> None:
    with pytest.raises(Invalid, match="end after it starts"):
        create(db_session, settings, authorised_until=until)


def test_institutions_networks_normalised_and_deduplicated(
    db_session: Session, settings: Settings
) -> None:
    institution = create(
        db_session,
        settings,
        allowed_networks=[" 192.0.2.7/24", "192.0.2.0/24", "2001:DB8::/32", "198.51.100.1"],
    )

    assert institution.allowed_networks == ["192.0.2.0/24", "2001:db8::/32", "198.51.100.1/32"]


@pytest.mark.parametrize(
    "network", ["", "10.0.0.0/33", "300.1.2.3/8", "example.org", "10.0.0.0/8; DROP", "x" * 5000]
)
def test_institutions_bad_cidr_refused(
    db_session: Session, settings: Settings, network: str
) -> None:
    with pytest.raises(Invalid) as caught:
        create(db_session, settings, allowed_networks=["10.0.0.0/8", network])

    assert caught.value.details["rule"] == "cidr"
    assert len(caught.value.message) < 200


def test_institutions_too_many_networks_refused(db_session: Session, settings: Settings) -> None:
    networks = [f"10.0.{i}.0/24" for i in range(51)]

    with pytest.raises(Invalid, match="At most 50"):
        create(db_session, settings, allowed_networks=networks)


def test_institutions_name_unique_case_insensitive(db_session: Session, settings: Settings) -> None:
    create(db_session, settings)

    with pytest.raises(Conflict, match="already exists"):
        create(db_session, settings, name="  ERASMUS institute ")


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "bad\x00name", "tab\tname"])
def test_institutions_bad_name_refused(db_session: Session, settings: Settings, name: str) -> None:
    with pytest.raises(Invalid):
        create(db_session, settings, name=name)


def test_institutions_update_changes_fields_and_version(
    db_session: Session, settings: Settings
) -> None:
    institution = create(db_session, settings)

    institutions.update_institution(
        db_session,
        settings,
        institution,
        version=1,
        authorised_until=date(2027, 6, 30),
        allowed_networks=["192.0.2.0/24"],
    )

    assert institution.version == 2
    assert institution.authorised_until == date(2027, 6, 30)
    event = last_event(db_session)
    assert event.action == "institution_updated"
    assert event.details["changes"]["authorised_until"] == ["2028-12-31", "2027-06-30"]
    assert event.details["changes"]["allowed_networks"] == [[], ["192.0.2.0/24"]]


def test_institutions_update_stale_version_conflicts(
    db_session: Session, settings: Settings
) -> None:
    institution = create(db_session, settings)
    institutions.update_institution(db_session, settings, institution, version=1, name="Renamed")

    with pytest.raises(Conflict, match="changed by someone else") as caught:
        institutions.update_institution(db_session, settings, institution, version=1, name="X")

    assert caught.value.details == {"rule": "optimistic_lock", "current_version": 2}
    assert institution.name == "Renamed"


def test_institutions_update_validates_period_against_stored_from(
    db_session: Session, settings: Settings
) -> None:
    institution = create(db_session, settings)

    with pytest.raises(Invalid, match="at most 3 years"):
        institutions.update_institution(
            db_session, settings, institution, version=1, authorised_until=date(2030, 1, 1)
        )


def test_institutions_update_without_changes_writes_nothing(
    db_session: Session, settings: Settings
) -> None:
    institution = create(db_session, settings)
    before = last_event(db_session).seq

    institutions.update_institution(db_session, settings, institution, version=1, country="nl")

    assert institution.version == 1
    assert last_event(db_session).seq == before


def test_institutions_is_authorised_inclusive_bounds(db_session: Session) -> None:
    institution = make_institution(
        db_session, authorised_from=date(2026, 1, 1), authorised_until=date(2026, 12, 31)
    )

    assert institutions.is_authorised(institution, date(2026, 1, 1))
    assert institutions.is_authorised(institution, date(2026, 12, 31))
    assert not institutions.is_authorised(institution, date(2025, 12, 31))
    assert not institutions.is_authorised(institution, date(2027, 1, 1))


def test_institutions_get_missing_raises_not_found(db_session: Session) -> None:
    with pytest.raises(NotFound):
        institutions.get_institution(db_session, 999_999)


def test_institutions_list_for_researcher_is_own_only(db_session: Session) -> None:
    mine = make_institution(db_session)
    make_institution(db_session)
    me = make_user(db_session, institution=mine)

    items, total = institutions.list_institutions(db_session, me)

    assert [i.id for i in items] == [mine.id]
    assert total == 1


def test_institutions_list_pages(db_session: Session) -> None:
    for n in range(5):
        make_institution(db_session, name=f"Page {n}")

    items, total = institutions.list_institutions(db_session, None, limit=2, offset=2)

    assert total >= 5
    assert len(items) == 2
