"""Institutions: the organisations whose researchers may be authorised, and their rules.

An institution is authorised for a period of at most `max_authorisation_years` (SPEC: 3 years),
only in a country with a GDPR-adequate level of protection, optionally only from some networks.
Every change is audited in the caller's transaction; updates use optimistic locking.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from collections.abc import Iterable
from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator import audit, db, policy
from orchestrator.config import Settings
from orchestrator.errors import Conflict, Invalid, NotFound
from orchestrator.models import Institution, User

MAX_NAME_LENGTH = 200
MAX_NETWORKS = 50
MAX_NETWORK_LENGTH = 64


def get_institution(session: Session, institution_id: int) -> Institution:
    institution = session.get(Institution, institution_id)
    if institution is None:
        raise NotFound("Institution not found.")
    return institution


def find_institution_by_name(session: Session, name: str) -> Institution | None:
    wanted = clean_name(name).lower()
    return session.scalars(
        select(Institution).where(func.lower(Institution.name) == wanted)
    ).one_or_none()


def list_institutions(
    session: Session, viewer: User | None, *, limit: int = 50, offset: int = 0
) -> tuple[list[Institution], int]:
    """One page of the institutions the viewer may see (all of them for the system), by name."""
    stmt = select(Institution)
    if viewer is not None:
        stmt = policy.visible_institutions(stmt, viewer)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    items = session.scalars(stmt.order_by(Institution.name).limit(limit).offset(offset)).all()
    return list(items), total


def is_authorised(institution: Institution, today: date) -> bool:
    """Whether the authorisation covers `today` (both ends inclusive)."""
    return institution.authorised_from <= today <= institution.authorised_until


# --- validation -----------------------------------------------------------------------------------


def clean_name(value: str) -> str:
    name = unicodedata.normalize("NFC", value).strip()
    if not name:
        raise Invalid("The institution's name must not be empty.", {"field": "name"})
    if len(name) > MAX_NAME_LENGTH:
        raise Invalid(
            f"The institution's name is longer than {MAX_NAME_LENGTH} characters.",
            {"field": "name"},
        )
    if any(unicodedata.category(char).startswith("C") for char in name):
        raise Invalid("The institution's name contains control characters.", {"field": "name"})
    return name


def clean_country(value: str, settings: Settings) -> str:
    """An ISO 3166-1 alpha-2 code (upper case) on the configured adequacy list, or `Invalid`."""
    country = value.strip().upper()
    if len(country) != 2 or not country.isascii() or not country.isalpha():
        raise Invalid(
            "The country must be an ISO 3166-1 alpha-2 code such as NL.",
            {"field": "country", "rule": "iso_3166_alpha_2"},
        )
    allowed = {code.upper() for code in settings.adequate_countries}
    if country not in allowed:
        raise Invalid(
            f"Country {country} is not on the list of countries with a GDPR-adequate level of "
            "protection (KLUIS_ADEQUATE_COUNTRIES); its institutions cannot be authorised.",
            {"field": "country", "rule": "adequate_country"},
        )
    return country


def add_years(day: date, years: int) -> date:
    """The same calendar day `years` later; 29 February becomes 28 February; `date.max` when
    that is past the calendar's end (year 9999)."""
    if day.year + years > date.max.year:
        return date.max
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def check_period(authorised_from: date, authorised_until: date, settings: Settings) -> None:
    if authorised_until <= authorised_from:
        raise Invalid(
            "The authorisation must end after it starts.",
            {"field": "authorised_until", "rule": "until_after_from"},
        )
    latest = add_years(authorised_from, settings.max_authorisation_years)
    if authorised_until > latest:
        raise Invalid(
            f"An authorisation lasts at most {settings.max_authorisation_years} years: "
            f"from {authorised_from.isoformat()} it may run until {latest.isoformat()} at the "
            "latest.",
            {"field": "authorised_until", "rule": "max_authorisation_years"},
        )


def clean_networks(values: Iterable[str]) -> list[str]:
    """Valid CIDRs in normal form (host bits cleared), without duplicates, at most 50."""
    networks: list[str] = []
    for raw in values:
        if len(networks) >= MAX_NETWORKS:
            raise Invalid(
                f"At most {MAX_NETWORKS} allowed networks per institution.",
                {"field": "allowed_networks", "rule": "max_networks"},
            )
        text = raw.strip() if isinstance(raw, str) else ""
        if not text or len(text) > MAX_NETWORK_LENGTH:
            raise Invalid(
                "An allowed network must be a CIDR such as 192.0.2.0/24 or 2001:db8::/32.",
                {"field": "allowed_networks", "rule": "cidr"},
            )
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            shown = text[:MAX_NETWORK_LENGTH]
            raise Invalid(
                f"{shown!r} is not a network in CIDR notation (such as 192.0.2.0/24).",
                {"field": "allowed_networks", "rule": "cidr"},
            ) from None
        normal = str(network)
        if normal not in networks:
            networks.append(normal)
    return networks


def _check_unique_name(session: Session, name: str, own_id: int | None) -> None:
    existing = find_institution_by_name(session, name)
    if existing is not None and existing.id != own_id:
        raise Conflict(f"An institution named {existing.name!r} already exists.")


# --- changes --------------------------------------------------------------------------------------


def create_institution(
    session: Session,
    settings: Settings,
    *,
    name: str,
    country: str,
    authorised_from: date,
    authorised_until: date,
    allowed_networks: Iterable[str] = (),
    actor: User | None = None,
    source: str = "",
) -> Institution:
    """Validate and add an institution; `actor=None` is the system (command line)."""
    name = clean_name(name)
    country = clean_country(country, settings)
    check_period(authorised_from, authorised_until, settings)
    networks = clean_networks(allowed_networks)
    _check_unique_name(session, name, None)
    institution = Institution(
        name=name,
        country=country,
        authorised_from=authorised_from,
        authorised_until=authorised_until,
        allowed_networks=networks,
    )
    session.add(institution)
    session.flush()
    audit.record(
        session,
        "institution_created",
        actor=actor,
        object_type="institution",
        object_id=institution.id,
        source=source,
        details=_snapshot(institution),
    )
    return institution


def update_institution(
    session: Session,
    settings: Settings,
    institution: Institution,
    *,
    version: int,
    actor: User | None = None,
    source: str = "",
    name: str | None = None,
    country: str | None = None,
    authorised_from: date | None = None,
    authorised_until: date | None = None,
    allowed_networks: Iterable[str] | None = None,
) -> Institution:
    """Change the given fields (`None` leaves one as it is).

    `version` is the version the caller last read: if the institution changed since, nothing is
    written and `Conflict` says to reload (optimistic locking; a concurrent writer that commits
    between our read and our flush is caught by the ORM's version check the same way).
    """
    db.check_version("The institution", version, institution.version)
    new: dict[str, Any] = {}
    if name is not None:
        new["name"] = clean_name(name)
        _check_unique_name(session, new["name"], institution.id)
    if country is not None:
        new["country"] = clean_country(country, settings)
    if authorised_from is not None or authorised_until is not None:
        new["authorised_from"] = authorised_from or institution.authorised_from
        new["authorised_until"] = authorised_until or institution.authorised_until
        check_period(new["authorised_from"], new["authorised_until"], settings)
    if allowed_networks is not None:
        new["allowed_networks"] = clean_networks(allowed_networks)
    changes: dict[str, list[Any]] = {}
    for field, value in new.items():
        old = getattr(institution, field)
        if value != old:
            changes[field] = [_jsonable(old), _jsonable(value)]
            setattr(institution, field, value)
    if not changes:
        return institution
    with db.conflict_if_stale("The institution", version):
        session.flush()
    audit.record(
        session,
        "institution_updated",
        actor=actor,
        object_type="institution",
        object_id=institution.id,
        source=source,
        details={"changes": changes, "version": institution.version},
    )
    return institution


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def _snapshot(institution: Institution) -> dict[str, Any]:
    return {
        "name": institution.name,
        "country": institution.country,
        "authorised_from": institution.authorised_from.isoformat(),
        "authorised_until": institution.authorised_until.isoformat(),
        "allowed_networks": list(institution.allowed_networks),
    }
