"""Project rules: the checks an application and a change request share. Free text is cleaned
(NFC, bounded, no control characters); codes, compute sizes, periods, a member's standing and the
dataset versions asked for are checked. Each raises `Invalid` naming the field at fault.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from datetime import date

from sqlalchemy.orm import Session

from orchestrator import catalogue
from orchestrator.accounts import has_valid_statement
from orchestrator.config import Settings
from orchestrator.errors import Invalid, NotFound
from orchestrator.institutions import add_years, is_authorised
from orchestrator.models import Role, User, UserStatus

CODE_PATTERN = re.compile(r"[1-9][0-9]{3,4}")
MAX_TITLE_LENGTH = 200
MAX_TEXT_LENGTH = 10_000  # purpose, legal basis, expected publications
MAX_COMMENT_LENGTH = 2_000
MAX_DATASETS = 200


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c).startswith("C") and c not in "\n\r\t" for c in text)


def clean_text(value: str, field: str, *, maximum: int, required: bool) -> str:
    """NFC, trimmed, at most `maximum` characters, no control characters but line breaks/tabs."""
    text = unicodedata.normalize("NFC", value[: maximum * 2]).strip()
    if required and not text:
        raise Invalid(f"The {field.replace('_', ' ')} must not be empty.", {"field": field})
    if len(text) > maximum or _has_control(text):
        raise Invalid(
            f"The {field.replace('_', ' ')} must have at most {maximum} characters, "
            "without control characters.",
            {"field": field},
        )
    return text


def clean_title(value: str) -> str:
    title = clean_text(value, "title", maximum=MAX_TITLE_LENGTH, required=True)
    if "\n" in title or "\r" in title or "\t" in title:
        raise Invalid("The title is one line.", {"field": "title"})
    return title


def clean_comment(value: str | None, *, required: bool) -> str:
    return clean_text(value or "", "comment", maximum=MAX_COMMENT_LENGTH, required=required)


def clean_code(value: str) -> str:
    code = value.strip()
    if not CODE_PATTERN.fullmatch(code):
        raise Invalid(
            "A project code is a number of 4 or 5 digits, not starting with 0.",
            {"field": "code", "rule": "project_code"},
        )
    return code


def check_compute_size(size: str, settings: Settings) -> str:
    if size not in settings.compute_sizes:
        names = ", ".join(sorted(settings.compute_sizes))
        raise Invalid(
            f"The compute size must be one of: {names}.",
            {"field": "compute_size", "rule": "compute_size"},
        )
    return size


def check_period(start: date, end: date, settings: Settings, today: date) -> None:
    if start < today:
        raise Invalid(
            "A new project cannot start in the past.",
            {"field": "start_date", "rule": "start_not_past"},
        )
    if end <= start:
        raise Invalid(
            "The project must end after it starts.",
            {"field": "end_date", "rule": "end_after_start"},
        )
    latest = add_years(start, settings.max_project_years)
    if end > latest:
        raise Invalid(
            f"A project lasts at most {settings.max_project_years} years: from "
            f"{start.isoformat()} it may run until {latest.isoformat()} at the latest.",
            {"field": "end_date", "rule": "max_project_years"},
        )


def standing_problem(user: User, today: date) -> str | None:
    """Why `user` may not be (or stay) a project member today, or `None` when they may."""
    if user.role is not Role.RESEARCHER:
        return "only researchers can be project members"
    if user.status is not UserStatus.ACTIVE:
        return f"the account is {user.status.value}"
    if user.institution is None:
        return "the account belongs to no institution"
    if not is_authorised(user.institution, today):
        return f"the authorisation of {user.institution.name} does not cover today"
    if not has_valid_statement(user, today):
        return "there is no valid confidentiality statement"
    return None


def check_standing(user: User, today: date, *, field: str, as_lead: bool = False) -> None:
    """`Invalid` unless the user is an active researcher of an authorised institution with a
    valid confidentiality statement."""
    problem = standing_problem(user, today)
    if problem is not None:
        role = "lead" if as_lead else "member"
        raise Invalid(
            f"{user.username} cannot be a project {role}: {problem}.",
            {"field": field, "rule": "member_standing", "user_id": user.id},
        )


def available_version_ids(
    session: Session, version_ids: Iterable[int], today: date, *, field: str
) -> list[int]:
    """The ids without duplicates, each a dataset version that may be granted today."""
    unique = list(dict.fromkeys(version_ids))
    if len(unique) > MAX_DATASETS:
        raise Invalid(f"At most {MAX_DATASETS} dataset versions.", {"field": field})
    for version_id in unique:
        try:
            version = catalogue.get_dataset_version_by_id(session, version_id)
        except NotFound:
            raise Invalid(f"There is no dataset version {version_id}.", {"field": field}) from None
        if not catalogue.is_available(version, today):
            raise Invalid(
                f"Dataset version {version.dataset.code} {version.label} is not available "
                f"on {today.isoformat()}.",
                {"field": field, "rule": "dataset_available", "dataset_version_id": version_id},
            )
    return unique
