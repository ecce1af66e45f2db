"""`kluis schedule|mail|invoices|tariffs ...`: the expiry schedule (once, or as a loop that also
delivers mail), the e-mail outbox, the quarterly invoice CSV and the tariff versions.

Like the other administration commands they act as "system" in the audit trail unless `--as`
names a person (whose rights then apply).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from orchestrator import accounts, costs, notify, policy, scheduler
from orchestrator.config import Settings
from orchestrator.db import make_engine, make_sessionmaker, session_scope
from orchestrator.errors import KluisError
from orchestrator.models import User, utcnow
from orchestrator.policy import Action

schedule_app = typer.Typer(
    help="The expiry schedule: activation, expiry, archiving, deletion, reminders.",
    no_args_is_help=True,
)
mail_app = typer.Typer(help="The e-mail outbox.", no_args_is_help=True)
invoices_app = typer.Typer(help="Quarterly invoice lines.", no_args_is_help=True)
tariffs_app = typer.Typer(
    help="Tariff versions (never edited; add a new one).", no_args_is_help=True
)

AsOption = Annotated[
    str | None,
    typer.Option("--as", help="Act as this user (their rights apply; audited under their name)."),
]
PriceOption = Annotated[str, typer.Option(help="Amount, e.g. 150.00")]

# --- plumbing -------------------------------------------------------------------------------------


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """A session factory whose sessions carry the settings (`notify` reads them there). Its
    units of work write, so on SQLite they take the write lock up front and queue."""
    engine: Engine = make_engine(settings)
    factory = make_sessionmaker(engine, write=True)
    factory.configure(info={"settings": settings})
    try:
        yield factory
    finally:
        engine.dispose()


@contextlib.contextmanager
def _transaction(settings: Settings) -> Iterator[Session]:
    """One unit of work; a `KluisError` becomes a one-line message and exit code 1."""
    with _database(settings) as factory:
        try:
            with session_scope(factory) as session:
                yield session
        except KluisError as exc:
            _fail(exc.message)


def _actor(session: Session, username: str | None, action: Action) -> User | None:
    if username is None:
        return None
    actor = accounts.find_user_by_username(session, username)
    if actor is None:
        _fail(f"no user {username!r} (--as)")
    policy.authorize(actor, action)
    return actor


def _moment(value: str | None) -> datetime:
    if value is None:
        return utcnow()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        _fail("--now must be an ISO 8601 time like 2026-12-31T23:59:59Z", 2)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# --- schedule -------------------------------------------------------------------------------------


@schedule_app.command("run-once")
def schedule_run_once(
    ctx: typer.Context,
    now: Annotated[
        str | None, typer.Option(help="Pretend it is this time (ISO 8601; UTC if no offset).")
    ] = None,
) -> None:
    """One pass of the schedule (safe to run at any time, also next to a running loop)."""
    settings = _settings(ctx)
    with _database(settings) as factory:
        report = scheduler.run_schedule(factory, settings, _moment(now))
    for name in ("activated", "expired", "archived", "deleted"):
        codes = getattr(report, name)
        typer.echo(f"{name}: {len(codes)}" + (f" ({', '.join(codes)})" if codes else ""))
    typer.echo(f"reminders: {report.reminders}")
    for error in report.errors:
        typer.echo(f"error: {error}", err=True)
    if report.errors:
        raise typer.Exit(1)


@schedule_app.command("loop")
def schedule_loop(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option(min=1, help="Seconds between passes.")] = 60,
) -> None:
    """Run the schedule and deliver the outbox every INTERVAL seconds until stopped (SIGTERM or
    Ctrl-C end it after the current pass)."""
    settings = _settings(ctx)
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _database(settings) as factory:
            typer.echo(f"schedule loop: every {interval:g} s; stop with Ctrl-C")
            passes = scheduler.run_forever(factory, settings, interval, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    typer.echo(f"schedule loop stopped after {passes} passes")


# --- mail -----------------------------------------------------------------------------------------


@mail_app.command("deliver")
def mail_deliver(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 100,
) -> None:
    """Send the messages that are due now (retries follow their backoff)."""
    settings = _settings(ctx)
    with _database(settings) as factory:
        report = notify.deliver_pending(factory, settings, utcnow(), limit=limit)
        with session_scope(factory) as session:
            pending = notify.pending_count(session)
    typer.echo(
        f"sent {report.sent}, to retry {report.retried}, failed {report.failed}; {pending} pending"
    )


# --- invoices -------------------------------------------------------------------------------------


@invoices_app.command("export")
def invoices_export(
    ctx: typer.Context,
    quarter: Annotated[str, typer.Option(help="The quarter, e.g. 2026Q4.")],
    output: Annotated[
        Path | None, typer.Option(help="Write the CSV here (default: standard output).")
    ] = None,
) -> None:
    """Invoice lines for every project in the quarter, as CSV, from the actual history."""
    settings = _settings(ctx)
    with _transaction(settings) as session:
        lines = costs.invoice_lines(session, quarter)
    if output is None:
        costs.export_invoices_csv(lines, sys.stdout)
        return
    with output.open("w", encoding="utf-8", newline="") as out:
        count = costs.export_invoices_csv(lines, out)
    total = sum((line.amount for line in lines), Decimal("0.00"))
    typer.echo(f"{count} lines, total {total}, written to {output}", err=True)


# --- tariffs --------------------------------------------------------------------------------------


@tariffs_app.command("list")
def tariffs_list(ctx: typer.Context) -> None:
    """Every tariff version, newest first."""
    with _transaction(_settings(ctx)) as session:
        for t in costs.list_tariffs(session):
            typer.echo(
                f"{t.label:<12} from {t.valid_from.isoformat()} {t.currency} "
                f"base={t.base_fee} researcher/month={t.per_researcher_month} "
                f"topic/month={t.per_topic_month} add-researcher={t.fee_add_researcher} "
                f"add-dataset={t.fee_add_dataset} extension={t.fee_extension}"
            )


@tariffs_app.command("create")
def tariffs_create(
    ctx: typer.Context,
    label: str,
    valid_from: Annotated[str, typer.Option(help="First day it applies, e.g. 2027-01-01.")],
    base_fee: PriceOption,
    per_researcher_month: PriceOption,
    per_topic_month: PriceOption,
    fee_add_researcher: PriceOption,
    fee_add_dataset: PriceOption,
    fee_extension: PriceOption,
    currency: Annotated[str, typer.Option(help="ISO 4217 code.")] = "EUR",
    as_user: AsOption = None,
) -> None:
    """Add a tariff version; projects quoted from VALID_FROM on use it."""
    try:
        first_day = date.fromisoformat(valid_from)
    except ValueError:
        _fail("--valid-from must be a date like 2027-01-01", 2)
    with _transaction(_settings(ctx)) as session:
        actor = _actor(session, as_user, Action.PROJECT_QUOTE)
        tariff = costs.create_tariff(
            session,
            label=label,
            valid_from=first_day,
            currency=currency,
            base_fee=base_fee,
            per_researcher_month=per_researcher_month,
            per_topic_month=per_topic_month,
            fee_add_researcher=fee_add_researcher,
            fee_add_dataset=fee_add_dataset,
            fee_extension=fee_extension,
            actor=actor,
        )
        typer.echo(f"tariff {tariff.label} created, valid from {tariff.valid_from.isoformat()}")
