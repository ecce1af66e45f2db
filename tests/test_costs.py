"""Costs against hand-computed examples: the duration rule, quotes, one-off fees, and quarterly
invoice lines from the actual membership and grant history, prorated by day.

Tariff used throughout (cost_factories.make_tariff): base fee 1000.00, per researcher per month
300.00, per topic per month 200.00; fees: researcher 150.00, dataset 100.00, extension 250.00.
"""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

import pytest
from cost_factories import (
    add_grant,
    add_researcher,
    at,
    make_project,
    make_tariff,
    make_version,
    request_version,
)
from sqlalchemy.orm import Session

from orchestrator import costs
from orchestrator.costs import InvoiceLine
from orchestrator.errors import Conflict, Invalid, NotFound
from orchestrator.models import AuditEvent, ChargeKind, Project, ProjectState

D = Decimal


# --- duration -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "months"),
    [
        (date(2026, 1, 15), date(2026, 4, 14), D(3)),  # three whole months, end inclusive
        (date(2026, 1, 1), date(2026, 12, 31), D(12)),
        (date(2026, 1, 15), date(2026, 4, 30), D(3) + D(16) / D(30)),  # Apr 15..30 of 30 days
        (date(2026, 2, 10), date(2026, 2, 19), D(10) / D(28)),  # 10 of the 28 days to Mar 10
        (date(2026, 1, 31), date(2026, 2, 27), D(1)),  # Jan 31 + 1 month = Feb 28 (clamped)
        (date(2026, 3, 5), date(2026, 3, 5), D(1) / D(31)),  # one day of a 31-day period
    ],
)
def test_duration_months_examples(start: date, end: date, months: Decimal) -> None:
    assert costs.duration_months(start, end) == months


def test_duration_months_end_before_start_is_invalid() -> None:
    with pytest.raises(Invalid):
        costs.duration_months(date(2026, 2, 1), date(2026, 1, 31))


def test_parse_quarter_bounds_and_refusals() -> None:
    assert costs.parse_quarter("2026Q4") == (date(2026, 10, 1), date(2026, 12, 31))
    assert costs.parse_quarter("2028q1") == (date(2028, 1, 1), date(2028, 3, 31))
    for bad in ("2026Q5", "2026-Q1", "26Q1", "", "1999Q1"):
        with pytest.raises(Invalid):
            costs.parse_quarter(bad)


# --- tariffs --------------------------------------------------------------------------------------


def test_current_tariff_is_latest_valid_on_date(db_session: Session) -> None:
    old = make_tariff(db_session, valid_from=date(1990, 1, 1))
    new = make_tariff(db_session, valid_from=date(1991, 7, 1))
    assert costs.current_tariff(db_session, date(1991, 6, 30)).id == old.id
    assert costs.current_tariff(db_session, date(1991, 7, 1)).id == new.id


def test_current_tariff_none_valid_is_not_found(db_session: Session) -> None:
    make_tariff(db_session, valid_from=date(1990, 1, 1))
    with pytest.raises(NotFound, match=r"No tariff is valid on 1989-12-31"):
        costs.current_tariff(db_session, date(1989, 12, 31))


def test_create_tariff_versions_are_never_edited(db_session: Session) -> None:
    tariff = costs.create_tariff(
        db_session,
        label="T-2031",
        valid_from=date(2031, 1, 1),
        base_fee="1000",
        per_researcher_month="300.5",
        per_topic_month=D("200.00"),
        fee_add_researcher=150,
        fee_add_dataset="100.00",
        fee_extension="250.00",
    )
    assert tariff.per_researcher_month == D("300.50")
    audit_row = db_session.query(AuditEvent).filter_by(action="tariff.create").one()
    assert audit_row.details["label"] == "T-2031"
    common = {
        "base_fee": "1",
        "per_researcher_month": "1",
        "per_topic_month": "1",
        "fee_add_researcher": "1",
        "fee_add_dataset": "1",
        "fee_extension": "1",
    }
    with pytest.raises(Conflict, match="never changed"):
        costs.create_tariff(db_session, label="T-2031", valid_from=date(2032, 1, 1), **common)
    with pytest.raises(Conflict, match="already takes effect"):
        costs.create_tariff(db_session, label="T-2031b", valid_from=date(2031, 1, 1), **common)


@pytest.mark.parametrize(
    ("field", "value"),
    [("base_fee", "-1"), ("base_fee", "1.005"), ("base_fee", "NaN"), ("base_fee", "abc")],
)
def test_create_tariff_refuses_bad_amounts(db_session: Session, field: str, value: str) -> None:
    prices = dict.fromkeys(
        (
            "base_fee",
            "per_researcher_month",
            "per_topic_month",
            "fee_add_researcher",
            "fee_add_dataset",
            "fee_extension",
        ),
        "1.00",
    )
    prices[field] = value
    with pytest.raises(Invalid):
        costs.create_tariff(db_session, label="X1", valid_from=date(2040, 1, 1), **prices)


def test_seed_demo_tariff_is_idempotent(db_session: Session) -> None:
    first = costs.seed_demo_tariff(db_session)
    assert costs.seed_demo_tariff(db_session).id == first.id


# --- quotes ---------------------------------------------------------------------------------------


def test_quote_hand_computed_with_prorating_and_one_topic_counted_once(
    db_session: Session,
) -> None:
    # 2026-01-15 .. 2026-04-30 = 3 + 16/30 months = 106/30.
    tariff = make_tariff(db_session)
    project = make_project(db_session, start=date(2026, 1, 15), end=date(2026, 4, 30))
    add_researcher(db_session, project, at("2025-12-01 10:00"))
    add_researcher(db_session, project, at("2025-12-01 10:00"))
    add_researcher(db_session, project, at("2025-12-01 10:00"), at("2025-12-20 10:00"))  # gone
    request_version(db_session, project, make_version(db_session, "Health"))
    request_version(db_session, project, make_version(db_session, "Health"))  # same topic
    request_version(db_session, project, make_version(db_session, "Income"))

    quote = costs.compute_quote(db_session, project, tariff)

    # researchers: lead + 2 current = 3; 3 x 106/30 x 300.00 = 3180.00
    # topics: Health, Income = 2;        2 x 106/30 x 200.00 = 1413.333.. -> 1413.33
    assert [(line.quantity, line.unit_price, line.amount) for line in quote.lines] == [
        (D(1), D("1000.00"), D("1000.00")),
        (D("10.6000"), D("300.00"), D("3180.00")),
        (D("7.0667"), D("200.00"), D("1413.33")),
    ]
    assert quote.total == D("5593.33")
    assert quote.months == D("3.5333")
    assert "Health, Income" in quote.lines[2].description
    assert quote.as_json()[1] == {
        "description": "Researchers (3) x 3.5333 months",
        "quantity": "10.6000",
        "unit_price": "300.00",
        "amount": "3180.00",
    }


def test_add_charge_uses_the_projects_tariff(db_session: Session) -> None:
    make_tariff(db_session, valid_from=date(1995, 1, 1), fee_extension="999.00")
    tariff = make_tariff(db_session, valid_from=date(1994, 1, 1))
    project = make_project(db_session, start=date(2026, 1, 1), end=date(2026, 12, 31))
    project.tariff = tariff

    charge = costs.add_charge(db_session, project, ChargeKind.EXTENSION, date(2026, 11, 2))

    assert (charge.amount, charge.incurred_on, charge.kind) == (
        D("250.00"),
        date(2026, 11, 2),
        ChargeKind.EXTENSION,
    )


def test_add_charge_without_tariff_is_a_conflict(db_session: Session) -> None:
    project = make_project(db_session, start=date(2026, 1, 1), end=date(2026, 12, 31))
    with pytest.raises(Conflict, match="no tariff"):
        costs.add_charge(db_session, project, ChargeKind.ADD_DATASET, date(2026, 3, 1))


# --- invoices -------------------------------------------------------------------------------------


def _history_project(db_session: Session) -> Project:
    """Activated 2026-07-10 09:00, ends 2027-06-30. Lead L and member B throughout; member A
    from 2026-08-20 10:00 to 2026-09-05 15:00. Grants: Health v1 and Health v2 (one topic) from
    activation; Income from activation, revoked 2026-08-15 12:00. Fees: a researcher added on
    2026-08-20; an extension on 2026-10-02."""
    tariff = make_tariff(db_session)
    project = make_project(
        db_session,
        start=date(2026, 7, 10),
        end=date(2027, 6, 30),
        state=ProjectState.ACTIVE,
        tariff=tariff,
        activated_at=at("2026-07-10 09:00"),
        lead_added_at=at("2026-06-01 08:00"),
    )
    db_session.refresh(project)
    add_researcher(db_session, project, at("2026-07-01 08:00"))  # B
    add_researcher(db_session, project, at("2026-08-20 10:00"), at("2026-09-05 15:00"))  # A
    activated = at("2026-07-10 09:00")
    add_grant(db_session, project, make_version(db_session, "Health"), activated)
    add_grant(db_session, project, make_version(db_session, "Health"), activated)
    add_grant(
        db_session, project, make_version(db_session, "Income"), activated, at("2026-08-15 12:00")
    )
    costs.add_charge(db_session, project, ChargeKind.ADD_RESEARCHER, date(2026, 8, 20))
    costs.add_charge(db_session, project, ChargeKind.EXTENSION, date(2026, 10, 2))
    return project


def _summary(lines: list[InvoiceLine], code: str) -> list[tuple[str, date, date, str, str]]:
    return [
        (line.kind, line.period_start, line.period_end, str(line.quantity), str(line.amount))
        for line in lines
        if line.project_code == code
    ]


def test_invoice_quarter_of_activation_hand_computed(db_session: Session) -> None:
    project = _history_project(db_session)

    lines = costs.invoice_lines(db_session, "2026Q3")

    # Researchers (300.00 / month, prorated by day):
    #   July 10-31: L, B            = 2 x 22      = 44 days / 31 -> 300 x 44/31 = 425.81
    #   August:     L, B 31 each; A Aug 20-31 (12) = 74 days / 31 -> 300 x 74/31 = 716.13
    #   September:  L, B 30 each; A Sep 1-5 (5)    = 65 days / 30 -> 300 x 65/30 = 650.00
    # Topics (200.00 / month; Health v1 + v2 count once):
    #   July 10-31: Health, Income  = 2 x 22      = 44 days / 31 -> 200 x 44/31 = 283.87
    #   August:     Health 31 + Income Aug 1-15 (15) = 46 / 31  -> 200 x 46/31 = 296.77
    #   September:  Health 30                      = 30 / 30    -> 200.00
    # Base fee 1000.00 (activated in Q3); fee for the researcher added on Aug 20: 150.00.
    assert _summary(lines, project.code) == [
        ("base_fee", date(2026, 7, 10), date(2026, 7, 10), "1", "1000.00"),
        ("researchers", date(2026, 7, 10), date(2026, 7, 31), "1.4194", "425.81"),
        ("researchers", date(2026, 8, 1), date(2026, 8, 31), "2.3871", "716.13"),
        ("researchers", date(2026, 9, 1), date(2026, 9, 30), "2.1667", "650.00"),
        ("topics", date(2026, 7, 10), date(2026, 7, 31), "1.4194", "283.87"),
        ("topics", date(2026, 8, 1), date(2026, 8, 31), "1.4839", "296.77"),
        ("topics", date(2026, 9, 1), date(2026, 9, 30), "1.0000", "200.00"),
        ("add_researcher", date(2026, 8, 20), date(2026, 8, 20), "1", "150.00"),
    ]
    mine = [line for line in lines if line.project_code == project.code]
    assert sum(line.amount for line in mine) == D("3722.58")
    assert {line.currency for line in mine} == {"EUR"}


def test_invoice_next_quarter_has_no_base_fee_and_the_extension_fee(db_session: Session) -> None:
    project = _history_project(db_session)

    lines = costs.invoice_lines(db_session, "2026Q4")

    # L and B all quarter: 2 researchers x 300.00 = 600.00 a month; Health: 200.00 a month.
    assert _summary(lines, project.code) == [
        ("researchers", date(2026, 10, 1), date(2026, 10, 31), "2.0000", "600.00"),
        ("researchers", date(2026, 11, 1), date(2026, 11, 30), "2.0000", "600.00"),
        ("researchers", date(2026, 12, 1), date(2026, 12, 31), "2.0000", "600.00"),
        ("topics", date(2026, 10, 1), date(2026, 10, 31), "1.0000", "200.00"),
        ("topics", date(2026, 11, 1), date(2026, 11, 30), "1.0000", "200.00"),
        ("topics", date(2026, 12, 1), date(2026, 12, 31), "1.0000", "200.00"),
        ("extension", date(2026, 10, 2), date(2026, 10, 2), "1", "250.00"),
    ]


def test_invoice_stops_at_expiry_across_a_quarter_boundary(db_session: Session) -> None:
    # Active 2026-02-15 .. end date 2026-04-10 (inclusive), expired the next morning.
    project = make_project(
        db_session,
        start=date(2026, 2, 15),
        end=date(2026, 4, 10),
        state=ProjectState.EXPIRED,
        tariff=make_tariff(db_session),
        activated_at=at("2026-02-15 00:00"),
        expired_at=at("2026-04-11 00:00:30"),
    )
    q1 = _summary(costs.invoice_lines(db_session, "2026Q1"), project.code)
    q2 = _summary(costs.invoice_lines(db_session, "2026Q2"), project.code)
    q3 = _summary(costs.invoice_lines(db_session, "2026Q3"), project.code)

    # The lead alone: Feb 15-28 = 14/28 x 300 = 150.00; March 300.00; April 1-10 = 10/30 x 300.
    assert q1 == [
        ("base_fee", date(2026, 2, 15), date(2026, 2, 15), "1", "1000.00"),
        ("researchers", date(2026, 2, 15), date(2026, 2, 28), "0.5000", "150.00"),
        ("researchers", date(2026, 3, 1), date(2026, 3, 31), "1.0000", "300.00"),
    ]
    assert q2 == [("researchers", date(2026, 4, 1), date(2026, 4, 10), "0.3333", "100.00")]
    assert q3 == []


def test_invoice_closed_early_bills_to_the_day_of_closure(db_session: Session) -> None:
    project = make_project(
        db_session,
        start=date(2026, 4, 1),
        end=date(2026, 6, 30),
        state=ProjectState.ARCHIVED,
        tariff=make_tariff(db_session),
        activated_at=at("2026-04-01 00:00"),
        expired_at=at("2026-04-05 13:00"),  # closed early by staff, in the afternoon
        archived_at=at("2026-08-01 00:00"),
    )
    lines = _summary(costs.invoice_lines(db_session, "2026Q2"), project.code)
    # April 1-5 = 5 days: 300 x 5/30 = 50.00
    assert lines[1] == ("researchers", date(2026, 4, 1), date(2026, 4, 5), "0.1667", "50.00")


def test_invoice_skips_projects_never_activated(db_session: Session) -> None:
    project = make_project(
        db_session,
        start=date(2026, 7, 1),
        end=date(2026, 12, 31),
        state=ProjectState.APPROVED,
        tariff=make_tariff(db_session),
    )
    assert _summary(costs.invoice_lines(db_session, "2026Q3"), project.code) == []


def test_invoice_csv_has_header_decimal_strings_and_no_formulas(db_session: Session) -> None:
    project = _history_project(db_session)
    project.institution.name = "=HYPERLINK(1) Institute"
    db_session.flush()
    out = io.StringIO()

    count = costs.export_invoices_csv(costs.invoice_lines(db_session, "2026Q3"), out)

    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == [
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
    ]
    assert count == len(rows) - 1
    mine = [row for row in rows[1:] if row[0] == project.code]
    assert mine[2] == [
        project.code,
        "'=HYPERLINK(1) Institute",
        "researchers",
        "Researchers, August 2026: 74 researcher-days / 31",
        "2026-08-01",
        "2026-08-31",
        "2.3871",
        "300.00",
        "716.13",
        "EUR",
    ]


def test_project_costs_to_date(db_session: Session) -> None:
    project = _history_project(db_session)

    summary = costs.project_costs(db_session, project, date(2026, 8, 31))

    # Up to Aug 31: base fee, July and August lines from the Q3 example, and the Aug 20 fee.
    assert summary.invoiced_total == D("1000.00") + D("425.81") + D("716.13") + D("283.87") + D(
        "296.77"
    ) + D("150.00")
    assert summary.quote is not None
    assert summary.accepted_total is None
