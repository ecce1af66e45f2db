"""Costs: the versioned tariff, the quote before a project starts, one-off fees for changes, and
quarterly invoice lines computed from the actual membership and grant history.

Money is `Decimal`, never float; every amount is rounded half-up to cents once, at the end of its
own computation. The rules, stated once (docs/operations.md repeats them):

- **Project duration in months** (for the quote): whole calendar months counted from the start
  date (the same day of the month, or the month's last day when it has no such day), plus the
  remaining days divided by the number of days until the next such anniversary (which is the
  number of days in that month when no day is clamped). The end date is inclusive:
  2026-01-15 .. 2026-04-14 is exactly 3 months; 2026-01-15 .. 2026-04-30 is 3 + 16/30 months.
  Lines show quantities to 4 decimals; amounts are computed from the exact fraction.
- **Invoices** are prorated by day (UTC): a day counts for a researcher, a dataset topic or the
  project when it was in place at any moment of that day; per-month prices cost
  `price x days / days in that month`. The lead always counts as a researcher; two granted
  versions of one topic count once. The base fee is invoiced in the quarter of activation,
  one-off charges in the quarter they were incurred.
"""

from __future__ import annotations

import calendar
import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from orchestrator import audit
from orchestrator.errors import Conflict, Invalid, NotFound
from orchestrator.models import (
    ChangeRequest,
    Charge,
    ChargeKind,
    Dataset,
    DatasetVersion,
    Grant,
    Project,
    ProjectState,
    RequestedDataset,
    Tariff,
    User,
)

CENT = Decimal("0.01")
QUANTITY_PLACES = Decimal("0.0001")
MAX_AMOUNT = Decimal("9999999999.99")  # Numeric(12, 2)
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_QUARTER = re.compile(r"^(\d{4})Q([1-4])$")
# Cells a spreadsheet would run as a formula (OWASP "CSV injection"): prefixed with a quote.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
ENDED_STATES = frozenset({ProjectState.EXPIRED, ProjectState.ARCHIVED, ProjectState.DELETED})

FEE_OF: dict[ChargeKind, str] = {
    ChargeKind.ADD_RESEARCHER: "fee_add_researcher",
    ChargeKind.ADD_DATASET: "fee_add_dataset",
    ChargeKind.EXTENSION: "fee_extension",
}
FEE_DESCRIPTION: dict[ChargeKind, str] = {
    ChargeKind.ADD_RESEARCHER: "Fee: researcher added",
    ChargeKind.ADD_DATASET: "Fee: dataset added",
    ChargeKind.EXTENSION: "Fee: extension",
}
INVOICE_COLUMNS = (
    "project_code",
    "institution",
    "line_kind",
    "description",
    "period_start",
    "period_end",
    "quantity",
    "unit_price",
    "amount",
    "currency",
)


def money(value: Decimal) -> Decimal:
    """Round half-up to cents."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


# --- tariffs --------------------------------------------------------------------------------------


def current_tariff(session: Session, on_date: date) -> Tariff:
    """The tariff in force on `on_date`: the one with the latest `valid_from` on or before it."""
    tariff = session.scalars(
        select(Tariff)
        .where(Tariff.valid_from <= on_date)
        .order_by(Tariff.valid_from.desc(), Tariff.id.desc())
        .limit(1)
    ).first()
    if tariff is None:
        raise NotFound(
            f"No tariff is valid on {on_date.isoformat()}: a data steward must create one "
            "(`kluis tariffs create` or POST /api/tariffs)."
        )
    return tariff


def get_tariff(session: Session, label: str) -> Tariff:
    tariff = session.scalars(select(Tariff).where(Tariff.label == label)).one_or_none()
    if tariff is None:
        raise NotFound(f"No tariff labelled {label!r}.")
    return tariff


def list_tariffs(session: Session) -> list[Tariff]:
    """Every tariff, newest `valid_from` first."""
    return list(session.scalars(select(Tariff).order_by(Tariff.valid_from.desc(), Tariff.id)))


def _price(name: str, value: Decimal | str | int) -> Decimal:
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise Invalid(f"{name} must be an amount like 125.50.") from None
    if not amount.is_finite() or amount < 0 or amount > MAX_AMOUNT:
        raise Invalid(f"{name} must be between 0 and {MAX_AMOUNT}.")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise Invalid(f"{name} has more than 2 decimals.")
    return money(amount)


def create_tariff(
    session: Session,
    *,
    label: str,
    valid_from: date,
    base_fee: Decimal | str | int,
    per_researcher_month: Decimal | str | int,
    per_topic_month: Decimal | str | int,
    fee_add_researcher: Decimal | str | int,
    fee_add_dataset: Decimal | str | int,
    fee_extension: Decimal | str | int,
    currency: str = "EUR",
    actor: User | None = None,
    source: str = "",
) -> Tariff:
    """Add a tariff version. Tariffs are never edited: a project keeps the tariff it was quoted
    with, so a price change is a new label with a later `valid_from`. Audited."""
    label = label.strip()
    if not _LABEL.match(label):
        raise Invalid("A tariff label is 1-40 letters, digits, '.', '_' or '-', e.g. 2027.")
    currency = currency.strip().upper()
    if not _CURRENCY.match(currency):
        raise Invalid("The currency must be an ISO 4217 code such as EUR.")
    prices = {
        "base_fee": _price("base_fee", base_fee),
        "per_researcher_month": _price("per_researcher_month", per_researcher_month),
        "per_topic_month": _price("per_topic_month", per_topic_month),
        "fee_add_researcher": _price("fee_add_researcher", fee_add_researcher),
        "fee_add_dataset": _price("fee_add_dataset", fee_add_dataset),
        "fee_extension": _price("fee_extension", fee_extension),
    }
    if session.scalar(select(Tariff.id).where(Tariff.label == label)) is not None:
        raise Conflict(f"A tariff labelled {label!r} exists; tariffs are never changed.")
    if session.scalar(select(Tariff.id).where(Tariff.valid_from == valid_from)) is not None:
        raise Conflict(f"A tariff already takes effect on {valid_from.isoformat()}.")
    tariff = Tariff(label=label, valid_from=valid_from, currency=currency, **prices)
    session.add(tariff)
    session.flush()
    audit.record(
        session,
        "tariff.create",
        actor=actor,
        object_type="tariff",
        object_id=tariff.id,
        source=source,
        details={
            "label": label,
            "valid_from": valid_from.isoformat(),
            "currency": currency,
            **{k: str(v) for k, v in prices.items()},
        },
    )
    return tariff


DEMO_TARIFF_LABEL = "DEMO"


def seed_demo_tariff(session: Session) -> Tariff:
    """The demo price list (idempotent), valid from 2020 so every demo project finds it."""
    found = session.scalars(select(Tariff).where(Tariff.label == DEMO_TARIFF_LABEL)).one_or_none()
    if found is not None:
        return found
    return create_tariff(
        session,
        label=DEMO_TARIFF_LABEL,
        valid_from=date(2020, 1, 1),
        base_fee="1500.00",
        per_researcher_month="150.00",
        per_topic_month="100.00",
        fee_add_researcher="250.00",
        fee_add_dataset="250.00",
        fee_extension="200.00",
    )


# --- durations ------------------------------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    """The same day `months` later, or that month's last day when it is shorter."""
    years, month0 = divmod(day.month - 1 + months, 12)
    year = day.year + years
    last = calendar.monthrange(year, month0 + 1)[1]
    return date(year, month0 + 1, min(day.day, last))


def duration_months(start: date, end: date) -> Decimal:
    """The length of `start .. end` (both inclusive) in months, as defined in the module doc.
    Exact (not rounded): amounts are computed from it and rounded once, to cents."""
    if end < start:
        raise Invalid("The end date is before the start date.")
    stop = end + timedelta(days=1)
    whole = (stop.year - start.year) * 12 + stop.month - start.month
    while add_months(start, whole) > stop:
        whole -= 1
    anniversary = add_months(start, whole)
    days = (stop - anniversary).days
    if days == 0:
        return Decimal(whole)
    period = (add_months(start, whole + 1) - anniversary).days
    return Decimal(whole) + Decimal(days) / Decimal(period)


def shown(quantity: Decimal) -> Decimal:
    """A quantity as shown on a quote or invoice line: 4 decimals."""
    return quantity.quantize(QUANTITY_PLACES, rounding=ROUND_HALF_UP)


def days_in_month(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def parse_quarter(quarter: str) -> tuple[date, date]:
    """`"2026Q4"` -> (2026-10-01, 2026-12-31)."""
    found = _QUARTER.match(quarter.strip().upper())
    if found is None:
        raise Invalid("A quarter looks like 2026Q4.")
    year, number = int(found.group(1)), int(found.group(2))
    if year < 2000:
        raise Invalid("A quarter looks like 2026Q4.")
    first = date(year, 3 * number - 2, 1)
    return first, add_months(first, 3) - timedelta(days=1)


def quarter_of(day: date) -> str:
    return f"{day.year}Q{(day.month - 1) // 3 + 1}"


def days_in_place(
    start: datetime, end: datetime | None, first: date, last: date
) -> tuple[date, date] | None:
    """The UTC days on which `[start, end)` was in place at any moment, clipped to
    `first .. last`; `None` when there is no such day."""
    since = max(start.astimezone(UTC).date(), first)
    until = last
    if end is not None:
        until = min(last, (end.astimezone(UTC) - timedelta(microseconds=1)).date())
    return (since, until) if since <= until else None


# --- quotes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuoteLine:
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Quote:
    """What a project will cost over its planned period with its current members and data."""

    tariff_label: str
    currency: str
    months: Decimal
    lines: list[QuoteLine]
    total: Decimal

    def as_json(self) -> list[dict[str, str]]:
        """The lines as stored in `Project.quote_lines` (Decimal strings, never floats)."""
        return [
            {
                "description": line.description,
                "quantity": str(line.quantity),
                "unit_price": str(line.unit_price),
                "amount": str(line.amount),
            }
            for line in self.lines
        ]


def _current_researchers(project: Project) -> set[int]:
    return {m.user_id for m in project.members if m.removed_at is None} | {project.lead_id}


def project_topics(session: Session, project: Project) -> list[str]:
    """The distinct topics of the requested dataset versions and the unrevoked grants."""
    requested = (
        select(Dataset.topic)
        .join(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
        .join(RequestedDataset, RequestedDataset.dataset_version_id == DatasetVersion.id)
        .where(RequestedDataset.project_id == project.id)
    )
    granted = (
        select(Dataset.topic)
        .join(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
        .join(Grant, Grant.dataset_version_id == DatasetVersion.id)
        .where(Grant.project_id == project.id, Grant.revoked_at.is_(None))
    )
    return sorted(set(session.scalars(requested)) | set(session.scalars(granted)))


def compute_quote(session: Session, project: Project, tariff: Tariff) -> Quote:
    """Base fee + researchers x months x price + topics x months x price, each line rounded to
    cents. Researchers are the current members and the lead; topics those of the requested
    (and granted) dataset versions. Pure reading: the caller stores it (`Quote.as_json`)."""
    months = duration_months(project.start_date, project.end_date)
    researchers = len(_current_researchers(project))
    topics = project_topics(session, project)
    topic_names = f": {', '.join(topics)}" if topics else ""
    lines = [
        QuoteLine("Base fee", Decimal(1), tariff.base_fee, money(tariff.base_fee)),
        QuoteLine(
            f"Researchers ({researchers}) x {shown(months)} months",
            shown(researchers * months),
            tariff.per_researcher_month,
            money(researchers * months * tariff.per_researcher_month),
        ),
        QuoteLine(
            f"Dataset topics ({len(topics)}{topic_names}) x {shown(months)} months",
            shown(len(topics) * months),
            tariff.per_topic_month,
            money(len(topics) * months * tariff.per_topic_month),
        ),
    ]
    return Quote(
        tariff_label=tariff.label,
        currency=tariff.currency,
        months=shown(months),
        lines=lines,
        total=sum((line.amount for line in lines), Decimal("0.00")),
    )


def project_tariff(project: Project) -> Tariff:
    if project.tariff is None:
        raise Conflict(f"Project {project.code} has no tariff yet: it has not been quoted.")
    return project.tariff


def add_charge(
    session: Session,
    project: Project,
    kind: ChargeKind,
    on_date: date,
    change_request: ChangeRequest | None = None,
) -> Charge:
    """Record a one-off fee at the project's tariff; invoiced in the quarter of `on_date`."""
    tariff = project_tariff(project)
    amount: Decimal = getattr(tariff, FEE_OF[kind])
    charge = Charge(
        project_id=project.id,
        kind=kind,
        amount=money(amount),
        incurred_on=on_date,
        change_request_id=change_request.id if change_request is not None else None,
        description=FEE_DESCRIPTION[kind],
    )
    session.add(charge)
    session.flush()
    return charge


# --- invoices -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceLine:
    project_code: str
    institution: str
    kind: str  # base_fee | researchers | topics | add_researcher | add_dataset | extension
    description: str
    period_start: date
    period_end: date
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    currency: str


def billed_days(project: Project, first: date, last: date) -> tuple[date, date] | None:
    """The days of `first .. last` on which the project was active (or frozen): from its
    activation to its end date, or to its expiry when that came earlier."""
    if project.activated_at is None:
        return None
    end = project.expired_at if project.state in ENDED_STATES else None
    if end is None and project.state in ENDED_STATES:
        end = project.archived_at or project.deleted_at
    return days_in_place(project.activated_at, end, first, min(last, project.end_date))


def _months(first: date, last: date) -> Iterable[tuple[date, date]]:
    """`first .. last` cut at month boundaries."""
    start = first
    while start <= last:
        month_end = date(start.year, start.month, days_in_month(start))
        yield start, min(month_end, last)
        start = month_end + timedelta(days=1)


def _daily_counts(
    periods: Sequence[tuple[Any, datetime, datetime | None]], first: date, last: date
) -> dict[date, int]:
    """For each day of `first .. last`: how many distinct keys had a period covering it."""
    present: dict[date, set[Any]] = {}
    for key, start, end in periods:
        span = days_in_place(start, end, first, last)
        if span is None:
            continue
        day = span[0]
        while day <= span[1]:
            present.setdefault(day, set()).add(key)
            day += timedelta(days=1)
    return {day: len(keys) for day, keys in present.items()}


def _month_lines(
    project: Project,
    tariff: Tariff,
    kind: str,
    title: str,
    noun: str,
    price: Decimal,
    counts: dict[date, int],
    window: tuple[date, date],
) -> list[InvoiceLine]:
    lines = []
    for start, end in _months(*window):
        units = sum(counts.get(start + timedelta(days=i), 0) for i in range((end - start).days + 1))
        if units == 0:
            continue
        month_days = days_in_month(start)
        fraction = Decimal(units) / Decimal(month_days)
        lines.append(
            InvoiceLine(
                project_code=project.code,
                institution=project.institution.name,
                kind=kind,
                description=(f"{title}, {start:%B %Y}: {units} {noun}-days / {month_days}"),
                period_start=start,
                period_end=end,
                quantity=shown(fraction),
                unit_price=price,
                amount=money(price * fraction),
                currency=tariff.currency,
            )
        )
    return lines


def project_invoice_lines(
    session: Session, project: Project, first: date, last: date
) -> list[InvoiceLine]:
    """The project's invoice lines for the days `first .. last`: the base fee if it was
    activated then, researchers and topics per month prorated by day, and one-off charges."""
    lines: list[InvoiceLine] = []
    window = billed_days(project, first, last)
    if window is not None:
        tariff = project_tariff(project)
        assert project.activated_at is not None
        activated = project.activated_at.astimezone(UTC).date()
        if first <= activated <= last:
            lines.append(
                InvoiceLine(
                    project.code,
                    project.institution.name,
                    "base_fee",
                    "Base fee",
                    activated,
                    activated,
                    Decimal(1),
                    tariff.base_fee,
                    money(tariff.base_fee),
                    tariff.currency,
                )
            )
        members = [(m.user_id, m.added_at, m.removed_at) for m in project.members]
        members.append((project.lead_id, project.activated_at, None))
        grants = [
            (g.dataset_version.dataset.topic, g.granted_at, g.revoked_at) for g in project.grants
        ]
        lines += _month_lines(
            project,
            tariff,
            "researchers",
            "Researchers",
            "researcher",
            tariff.per_researcher_month,
            _daily_counts(members, *window),
            window,
        )
        lines += _month_lines(
            project,
            tariff,
            "topics",
            "Dataset topics",
            "topic",
            tariff.per_topic_month,
            _daily_counts(grants, *window),
            window,
        )
    charges = session.scalars(
        select(Charge)
        .where(Charge.project_id == project.id, Charge.incurred_on.between(first, last))
        .order_by(Charge.incurred_on, Charge.id)
    )
    for charge in charges:
        currency = project.tariff.currency if project.tariff is not None else ""
        lines.append(
            InvoiceLine(
                project.code,
                project.institution.name,
                charge.kind.value,
                charge.description or FEE_DESCRIPTION[charge.kind],
                charge.incurred_on,
                charge.incurred_on,
                Decimal(1),
                charge.amount,
                charge.amount,
                currency,
            )
        )
    return lines


def _with_history(stmt: Any) -> Any:
    return stmt.options(
        selectinload(Project.institution),
        selectinload(Project.tariff),
        selectinload(Project.members),
        selectinload(Project.grants)
        .selectinload(Grant.dataset_version)
        .selectinload(DatasetVersion.dataset),
    )


def invoice_lines(session: Session, quarter: str) -> list[InvoiceLine]:
    """Every project's invoice lines for a quarter ("2026Q4"), by project code.

    Computed from the history, so it can be run again at any time with the same result. An
    unfinished quarter is counted as planned up to its end (members and grants as they are now).
    """
    first, last = parse_quarter(quarter)
    last_moment = datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    activated = select(Project.id).where(
        Project.activated_at.is_not(None), Project.activated_at < last_moment
    )
    charged = select(Charge.project_id).where(Charge.incurred_on.between(first, last))
    projects = session.scalars(
        _with_history(select(Project))
        .where(Project.id.in_(activated.union(charged).scalar_subquery()))
        .order_by(Project.code)
    ).all()
    lines: list[InvoiceLine] = []
    for project in projects:
        lines += project_invoice_lines(session, project, first, last)
    return lines


def _cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def export_invoices_csv(lines: Iterable[InvoiceLine], out: IO[str]) -> int:
    """Write the lines as CSV (header first; dates ISO 8601; amounts as Decimal strings).
    Text cells that a spreadsheet would evaluate are prefixed with `'`. Returns the row count."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(INVOICE_COLUMNS)
    count = 0
    for line in lines:
        writer.writerow(
            [
                _cell(line.project_code),
                _cell(line.institution),
                line.kind,
                _cell(line.description),
                line.period_start.isoformat(),
                line.period_end.isoformat(),
                str(line.quantity),
                str(line.unit_price),
                str(line.amount),
                line.currency,
            ]
        )
        count += 1
    return count


def project_charges(session: Session, project: Project) -> list[Charge]:
    """The project's one-off charges, oldest first."""
    return list(
        session.scalars(
            select(Charge)
            .where(Charge.project_id == project.id)
            .order_by(Charge.incurred_on, Charge.id)
        )
    )


# --- a project's costs at a glance ----------------------------------------------------------------


@dataclass(frozen=True)
class ProjectCosts:
    """What the lead and staff see: the current estimate, the quote accepted, and what has been
    invoiced (or will be, for the current quarter) from activation up to `until`."""

    quote: Quote | None
    accepted_total: Decimal | None
    invoiced: list[InvoiceLine]
    invoiced_total: Decimal


def project_costs(session: Session, project: Project, until: date) -> ProjectCosts:
    tariff = project.tariff
    if tariff is None:
        try:
            tariff = current_tariff(session, project.start_date)
        except NotFound:
            tariff = None
    quote = compute_quote(session, project, tariff) if tariff is not None else None
    first = (
        project.activated_at.astimezone(UTC).date()
        if project.activated_at is not None
        else project.start_date
    )
    invoiced = project_invoice_lines(session, project, min(first, until), until)
    accepted = project.quote_total if project.quote_accepted_at is not None else None
    return ProjectCosts(
        quote=quote,
        accepted_total=accepted,
        invoiced=invoiced,
        invoiced_total=sum((line.amount for line in invoiced), Decimal("0.00")),
    )
