"""`kluis users|tokens|institutions|audit ...` and `kluis demo-data|demo-code`: administration
from the shell. The shell already holds the platform's keys, so commands act as "system" in the
audit trail; `--as USERNAME` records a named person instead and applies that person's rights.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, NoReturn

import pyotp
import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import accounts, audit, catalogue, institutions, passwords, policy, tokens, totp
from orchestrator.config import Environment, Settings
from orchestrator.costs import seed_demo_tariff
from orchestrator.db import make_engine, make_sessionmaker, session_scope
from orchestrator.errors import KluisError
from orchestrator.models import (
    Institution,
    Role,
    TokenKind,
    TokenState,
    TotpToken,
    User,
    UserStatus,
    utcnow,
)
from orchestrator.policy import Action

users_app = typer.Typer(
    help="Accounts: create, list, disable, activation links.", no_args_is_help=True
)
tokens_app = typer.Typer(help="The TOTP token inventory.", no_args_is_help=True)
institutions_app = typer.Typer(help="Authorised institutions.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit trail.", no_args_is_help=True)

AsOption = Annotated[
    str | None,
    typer.Option("--as", help="Act as this user (their rights apply; audited under their name)."),
]
DIGESTS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}

# --- plumbing -------------------------------------------------------------------------------------


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _transaction(settings: Settings) -> Iterator[Session]:
    """One unit of work: committed when the command succeeds; a `KluisError` becomes a one-line
    message (plus its list of problems) and exit code 1, and nothing is written."""
    engine = make_engine(settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            yield session
    except KluisError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        for problem in exc.details.get("problems", []):
            typer.echo(f"  {problem.get('serial', '')}: {problem.get('problem', '')}", err=True)
        for serial in exc.details.get("duplicates", []):
            typer.echo(f"  duplicate: {serial}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


def _actor(
    session: Session, username: str | None, action: Action, obj: object = None
) -> User | None:
    """`None` (the system) without `--as`; else that active user, whose rights must allow it."""
    if username is None:
        return None
    actor = accounts.find_user_by_username(session, username)
    if actor is None:
        _fail(f"no user {username!r} (--as)")
    policy.authorize(actor, action, obj)
    return actor


def _user(session: Session, username: str) -> User:
    user = accounts.find_user_by_username(session, username)
    if user is None:
        _fail(f"no user {username!r}")
    return user


def _token(session: Session, serial: str) -> TotpToken:
    token = tokens.find_token_by_serial(session, serial)
    if token is None:
        _fail(f"no token with serial {serial!r}")
    return token


def _institution(session: Session, name_or_id: str) -> Institution:
    found = (
        session.get(Institution, int(name_or_id))
        if name_or_id.isdigit()
        else institutions.find_institution_by_name(session, name_or_id)
    )
    if found is None:
        _fail(f"no institution {name_or_id!r}")
    return found


def _day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        _fail(f"{option} must be a date like 2026-01-31", 2)


# --- users ----------------------------------------------------------------------------------------


@users_app.command("create")
def users_create(
    ctx: typer.Context,
    username: str,
    email: Annotated[str, typer.Option(help="E-mail address.")],
    name: Annotated[str, typer.Option("--name", help="Full name.")],
    role: Annotated[Role, typer.Option(help="Platform role.")] = Role.RESEARCHER,
    institution: Annotated[
        str | None, typer.Option(help="Institution name or id (researchers only).")
    ] = None,
    as_user: AsOption = None,
) -> None:
    """Create a pending account and print its one-time activation link."""
    settings = _settings(ctx)
    with _transaction(settings) as session:
        actor = _actor(session, as_user, Action.USER_CREATE)
        institution_id = _institution(session, institution).id if institution else None
        user, secret = accounts.create_account(
            session,
            settings,
            username=username,
            email=email,
            full_name=name,
            role=role,
            institution_id=institution_id,
            actor=actor,
        )
        typer.echo(f"created {user.username} ({user.role.value}), pending activation")
        typer.echo(f"activation link (shown once, valid {settings.activation_link_hours} h):")
        typer.echo(accounts.activation_url(settings, secret))


@users_app.command("list")
def users_list(
    ctx: typer.Context,
    role: Annotated[Role | None, typer.Option(help="Only this role.")] = None,
    status: Annotated[UserStatus | None, typer.Option(help="Only this status.")] = None,
    query: Annotated[str | None, typer.Option("--query", "-q", help="Part of a name.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 200,
) -> None:
    """List accounts: username, role, status, institution, statement valid until."""
    with _transaction(_settings(ctx)) as session:
        items, total = accounts.list_users(
            session, None, query=query, role=role, status=status, limit=limit
        )
        for user in items:
            statement = (
                user.statement_valid_until.isoformat() if user.statement_valid_until else "-"
            )
            typer.echo(
                f"{user.username:<24} {user.role.value:<15} {user.status.value:<10} "
                f"institution={user.institution_id or '-'} statement={statement}"
            )
        typer.echo(f"{len(items)} of {total} accounts")


def _set_status(
    ctx: typer.Context, username: str, status: UserStatus, reason: str | None, as_user: str | None
) -> None:
    with _transaction(_settings(ctx)) as session:
        user = _user(session, username)
        actor = _actor(session, as_user, Action.USER_DISABLE, user)
        ended = accounts.set_status(session, user, status, actor=actor, reason=reason)
        typer.echo(f"{user.username} is {status.value}; {ended} sessions ended")


@users_app.command("disable")
def users_disable(
    ctx: typer.Context,
    username: str,
    reason: Annotated[str, typer.Option(help="Why (kept in the audit trail).")],
    close: Annotated[
        bool, typer.Option(help="Close the account instead of suspending it.")
    ] = False,
    as_user: AsOption = None,
) -> None:
    """Suspend (or with --close, close) an account; its sessions end at once."""
    _set_status(
        ctx, username, UserStatus.CLOSED if close else UserStatus.SUSPENDED, reason, as_user
    )


@users_app.command("enable")
def users_enable(ctx: typer.Context, username: str, as_user: AsOption = None) -> None:
    """Reactivate a suspended or closed account."""
    _set_status(ctx, username, UserStatus.ACTIVE, None, as_user)


@users_app.command("set-role")
def users_set_role(
    ctx: typer.Context,
    username: str,
    role: Role,
    institution: Annotated[str | None, typer.Option(help="For a new researcher.")] = None,
    as_user: AsOption = None,
) -> None:
    """Change an account's role (the only way to make or unmake an ops account)."""
    with _transaction(_settings(ctx)) as session:
        user = _user(session, username)
        actor = _actor(session, as_user, Action.USER_ROLE_CHANGE, user)
        institution_id = _institution(session, institution).id if institution else None
        changed = accounts.change_role(
            session, user, role, actor=actor, institution_id=institution_id
        )
        typer.echo(f"{user.username} is {role.value}" + ("" if changed else " already"))


@users_app.command("activation-link")
def users_activation_link(ctx: typer.Context, username: str, as_user: AsOption = None) -> None:
    """A new one-time link; for an active account this resets the password and ends sessions."""
    settings = _settings(ctx)
    with _transaction(settings) as session:
        user = _user(session, username)
        actor = _actor(session, as_user, Action.USER_RESET_PASSWORD, user)
        if user.status is UserStatus.ACTIVE:
            secret = accounts.reset_password(session, settings, user, actor=actor)
            typer.echo(f"password of {user.username} reset; sessions ended")
        else:
            secret = accounts.issue_activation_link(session, settings, user, actor=actor)
        typer.echo(f"activation link (shown once, valid {settings.activation_link_hours} h):")
        typer.echo(accounts.activation_url(settings, secret))


# --- tokens ---------------------------------------------------------------------------------------


@tokens_app.command("import")
def tokens_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    psk_hex: Annotated[
        str | None,
        typer.Option(
            "--psk-hex", envvar="KLUIS_PSKC_PSK_HEX", help="Pre-shared key of an encrypted file."
        ),
    ] = None,
    as_user: AsOption = None,
) -> None:
    """Import a PSKC (RFC 6030) file: every key becomes a hardware token in stock, or none does."""
    settings = _settings(ctx)
    if file.stat().st_size > tokens.MAX_PSKC_BYTES:
        _fail(f"{file.name} is larger than {tokens.MAX_PSKC_BYTES // 1024 // 1024} MiB")
    with _transaction(settings) as session:
        actor = _actor(session, as_user, Action.TOKEN_IMPORT)
        imported = tokens.import_pskc(
            session, settings, file.read_bytes(), source=file.name, psk_hex=psk_hex, actor=actor
        )
        typer.echo(f"imported {len(imported)} tokens from {file.name}")


@tokens_app.command("list")
def tokens_list(
    ctx: typer.Context,
    state: Annotated[TokenState | None, typer.Option(help="Only this state.")] = None,
    kind: Annotated[TokenKind | None, typer.Option(help="Only this kind.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
) -> None:
    """List tokens: serial, kind, state, holder, dates."""
    with _transaction(_settings(ctx)) as session:
        items, total = tokens.list_tokens(session, None, state=state, kind=kind, limit=limit)
        holders = {
            u.id: u.username
            for u in session.scalars(
                select(User).where(User.id.in_({t.user_id for t in items if t.user_id}))
            )
        }
        for token in items:
            holder = holders.get(token.user_id or 0, "-")
            since = token.loaned_at.date().isoformat() if token.loaned_at else "-"
            typer.echo(
                f"{token.serial:<24} {token.kind.value:<9} {token.state.value:<9} "
                f"holder={holder} loaned={since}"
            )
        typer.echo(f"{len(items)} of {total} tokens")


@tokens_app.command("assign")
def tokens_assign(ctx: typer.Context, serial: str, username: str, as_user: AsOption = None) -> None:
    """Lend a token in stock to a user who has none on loan."""
    with _transaction(_settings(ctx)) as session:
        token, user = _token(session, serial), _user(session, username)
        actor = _actor(session, as_user, Action.TOKEN_ASSIGN, token)
        tokens.assign_token(session, token, user, actor=actor)
        typer.echo(f"{token.serial} is on loan to {user.username}")


def _end_loan(
    ctx: typer.Context, serial: str, as_user: str | None, state: TokenState, reason: str = ""
) -> None:
    with _transaction(_settings(ctx)) as session:
        token = _token(session, serial)
        actor = _actor(session, as_user, Action.TOKEN_REVOKE, token)
        if state is TokenState.RETURNED:
            ended = tokens.return_token(session, token, actor=actor)
        elif state is TokenState.LOST:
            ended = tokens.report_lost(session, token, actor=actor)
        elif state is TokenState.REVOKED:
            ended = tokens.revoke_token(session, token, actor=actor, reason=reason)
        else:
            tokens.restock_token(session, token, actor=actor)
            ended = 0
        typer.echo(f"{token.serial} is {state.value.replace('_', ' ')}; {ended} sessions ended")


@tokens_app.command("return")
def tokens_return(ctx: typer.Context, serial: str, as_user: AsOption = None) -> None:
    """The holder gave the token back; their sessions end."""
    _end_loan(ctx, serial, as_user, TokenState.RETURNED)


@tokens_app.command("lost")
def tokens_lost(ctx: typer.Context, serial: str, as_user: AsOption = None) -> None:
    """The token is lost; the holder's sessions end."""
    _end_loan(ctx, serial, as_user, TokenState.LOST)


@tokens_app.command("revoke")
def tokens_revoke(
    ctx: typer.Context,
    serial: str,
    reason: Annotated[str, typer.Option(help="Why (kept in the audit trail).")] = "",
    as_user: AsOption = None,
) -> None:
    """The token may never be used again; a holder's sessions end."""
    _end_loan(ctx, serial, as_user, TokenState.REVOKED, reason)


@tokens_app.command("restock")
def tokens_restock(ctx: typer.Context, serial: str, as_user: AsOption = None) -> None:
    """A returned hardware token was checked and may be lent again."""
    _end_loan(ctx, serial, as_user, TokenState.IN_STOCK)


# --- institutions ---------------------------------------------------------------------------------

NetworkOption = Annotated[
    list[str] | None, typer.Option("--network", help="Allowed network (CIDR); repeatable.")
]


@institutions_app.command("create")
def institutions_create(
    ctx: typer.Context,
    name: str,
    country: Annotated[str, typer.Option(help="ISO 3166-1 alpha-2 code, e.g. NL.")],
    authorised_from: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD).")],
    authorised_until: Annotated[str, typer.Option("--until", help="Last day (YYYY-MM-DD).")],
    network: NetworkOption = None,
    as_user: AsOption = None,
) -> None:
    """Authorise an institution (at most KLUIS_MAX_AUTHORISATION_YEARS years)."""
    settings = _settings(ctx)
    with _transaction(settings) as session:
        actor = _actor(session, as_user, Action.INSTITUTION_MANAGE)
        institution = institutions.create_institution(
            session,
            settings,
            name=name,
            country=country,
            authorised_from=_day(authorised_from, "--from"),
            authorised_until=_day(authorised_until, "--until"),
            allowed_networks=network or [],
            actor=actor,
        )
        typer.echo(f"created institution {institution.id}: {institution.name}")


@institutions_app.command("list")
def institutions_list(ctx: typer.Context) -> None:
    """List institutions with their authorisation and networks."""
    with _transaction(_settings(ctx)) as session:
        items, total = institutions.list_institutions(session, None, limit=10_000)
        today = utcnow().date()
        for i in items:
            state = "authorised" if institutions.is_authorised(i, today) else "NOT authorised"
            networks = ",".join(i.allowed_networks) or "anywhere"
            typer.echo(
                f"{i.id:>4} {i.name:<32} {i.country} {i.authorised_from}..{i.authorised_until} "
                f"{state} networks={networks}"
            )
        typer.echo(f"{total} institutions")


@institutions_app.command("update")
def institutions_update(
    ctx: typer.Context,
    institution: Annotated[str, typer.Argument(help="Name or id.")],
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    country: Annotated[str | None, typer.Option(help="New country code.")] = None,
    authorised_from: Annotated[str | None, typer.Option("--from", help="New first day.")] = None,
    authorised_until: Annotated[str | None, typer.Option("--until", help="New last day.")] = None,
    network: NetworkOption = None,
    clear_networks: Annotated[bool, typer.Option(help="Allow logins from anywhere.")] = False,
    as_user: AsOption = None,
) -> None:
    """Change an institution; only the options given change."""
    settings = _settings(ctx)
    with _transaction(settings) as session:
        found = _institution(session, institution)
        actor = _actor(session, as_user, Action.INSTITUTION_MANAGE, found)
        institutions.update_institution(
            session,
            settings,
            found,
            version=found.version,
            actor=actor,
            name=name,
            country=country,
            authorised_from=_day(authorised_from, "--from") if authorised_from else None,
            authorised_until=_day(authorised_until, "--until") if authorised_until else None,
            allowed_networks=[] if clear_networks else network,
        )
        typer.echo(f"institution {found.id} is at version {found.version}")


# --- audit ----------------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(ctx: typer.Context) -> None:
    """Check the whole hash chain; exit 1 and name the first broken row if it does not hold."""
    with _transaction(_settings(ctx)) as session:
        report = audit.verify_chain(session)
    if not report.ok:
        _fail(
            f"audit chain broken at row {report.first_broken_seq}: {report.reason} "
            f"({report.checked} rows before it are intact)"
        )
    typer.echo(f"audit chain intact: {report.checked} rows")


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option(help="Only events at or after this time (ISO 8601, UTC if no zone)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Write here instead of standard output.")
    ] = None,
) -> None:
    """Write events as JSON lines, hashes included (so the export itself can be verified)."""
    start = None
    if since is not None:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            _fail("--since must be an ISO 8601 date or time, e.g. 2026-01-31T00:00:00Z", 2)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
    with _transaction(_settings(ctx)) as session:
        if output is None:
            count = audit.export_jsonl(session, sys.stdout, since=start)
        else:
            with output.open("w", encoding="utf-8") as out:
                count = audit.export_jsonl(session, out, since=start)
    typer.echo(f"exported {count} events", err=True)


# --- development ----------------------------------------------------------------------------------

DEMO_INSTITUTION = "Kluis Demo Institute"
DEMO_PASSWORD = "kluis demo only, never in production"  # noqa: S105 (published on purpose)
DEMO_USERS = (
    ("steward", "Demo Data Steward", Role.DATA_STEWARD),
    ("researcher1", "Demo Researcher One", Role.RESEARCHER),
    ("researcher2", "Demo Researcher Two", Role.RESEARCHER),
)


def _refuse_outside_development(settings: Settings, command: str) -> None:
    if settings.environment is not Environment.DEVELOPMENT:
        _fail(f"`kluis {command}` runs only with KLUIS_ENVIRONMENT=development", 2)


def demo_data(ctx: typer.Context) -> None:
    """Seed demo data (idempotent): an institution, a data steward and two researchers with
    software tokens, known passwords and valid statements. Development only."""
    settings = _settings(ctx)
    _refuse_outside_development(settings, "demo-data")
    now = utcnow()
    with _transaction(settings) as session:
        institution = institutions.find_institution_by_name(session, DEMO_INSTITUTION)
        if institution is None:
            institution = institutions.create_institution(
                session,
                settings,
                name=DEMO_INSTITUTION,
                country="NL",
                authorised_from=now.date() - timedelta(days=1),
                authorised_until=now.date() + timedelta(days=2 * 365),
            )
        for username, full_name, role in DEMO_USERS:
            _demo_user(session, settings, institution, username, full_name, role, now)
        seed_demo_tariff(session)
        catalogue.seed_demo_catalogue(session, settings)
    url = settings.effective_public_url
    typer.echo(f"Demo data ready. Log in at {url}/login with one of:")
    for username, _, role in DEMO_USERS:
        typer.echo(f"  {username:<12} ({role.value})  password: {DEMO_PASSWORD}")
    typer.echo("The code of each user's software token: kluis demo-code USERNAME")


def _demo_user(
    session: Session,
    settings: Settings,
    institution: Institution,
    username: str,
    full_name: str,
    role: Role,
    now: datetime,
) -> None:
    user = accounts.find_user_by_username(session, username)
    if user is None:
        user, _ = accounts.create_account(
            session,
            settings,
            username=username,
            email=f"{username}@demo.kluis.invalid",
            full_name=full_name,
            role=role,
            institution_id=institution.id if role is Role.RESEARCHER else None,
            now=now,
        )
    if user.password_hash is None or user.status is UserStatus.PENDING:
        passwords.check_password_policy(DEMO_PASSWORD, username)
        user.password_hash = passwords.hash_password(DEMO_PASSWORD)
        user.status = UserStatus.ACTIVE
        user.status_changed_at = now
    if not accounts.has_valid_statement(user, now.date() + timedelta(days=30)):
        accounts.record_statement(session, user, signed_at=now)
    if accounts.token_on_loan(session, user) is None:
        tokens.create_software_token(session, settings, user, now=now)


def demo_code(ctx: typer.Context, username: str) -> None:
    """Print the current code of USERNAME's token from its stored seed. Development only."""
    settings = _settings(ctx)
    _refuse_outside_development(settings, "demo-code")
    with _transaction(settings) as session:
        user = _user(session, username)
        token = accounts.token_on_loan(session, user)
        if token is None:
            _fail(f"{user.username} has no token on loan")
        seed = totp.decrypt_seed(settings, token.seed_encrypted)
    generator = pyotp.TOTP(
        base64.b32encode(seed).decode("ascii"),
        digits=token.digits,
        digest=DIGESTS[token.algorithm],
        interval=token.period,
    )
    now = utcnow()
    left = token.period - int(now.timestamp()) % token.period
    typer.echo(generator.at(now))
    typer.echo(f"valid for {left} more seconds (token {token.serial})", err=True)
