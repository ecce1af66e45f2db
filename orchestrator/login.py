"""The login use case: username, password and TOTP code in, a new server-side session out.

Every refusal looks the same from outside (one message, one status, an argon2 verify on every
path); the real reason is kept in the audit trail. Failures are committed although the caller
gets an exception, because throttling counts them.
"""

from __future__ import annotations

import functools
import ipaddress
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import NoReturn

from sqlalchemy import bindparam, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, joinedload

from orchestrator import audit, passwords, throttle, totp
from orchestrator.config import Settings
from orchestrator.errors import AuthFailed
from orchestrator.models import Role, TokenState, TotpToken, User, UserSession, UserStatus
from orchestrator.sessions import open_session

GENERIC_FAILURE = "Invalid username, password or code"
MAX_USERNAME_LENGTH = 64  # User.username
MAX_FORWARDED_HOPS = 20

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalise_username(raw: str) -> str:
    """NFKC, case-folded, trimmed: the form usernames are stored and compared in.

    Characters that no username contains and some databases refuse (control characters, lone
    surrogates) become U+FFFD, so hostile input is just an unknown user.
    """
    name = unicodedata.normalize("NFKC", raw).casefold().strip()
    return "".join(
        "\ufffd" if unicodedata.category(char) in ("Cc", "Cs") else char for char in name
    )


# --- client address ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(
    request_peer: str, forwarded_for_header: str | None, trusted_proxies: Sequence[str]
) -> str:
    """The address a request came from.

    `X-Forwarded-For` is honoured only when the direct peer is a trusted proxy, and then read from
    the right: each trusted proxy appends the address it saw, so the right-most address that is
    not itself a trusted proxy is the client. Entries left of it are whatever the client claimed.
    A malformed entry stops the walk at the last trustworthy hop.
    """
    peer = _address(request_peer)
    if peer is None:
        return request_peer[: throttle.SOURCE_KEY_LENGTH]
    networks = _networks(tuple(trusted_proxies))
    if not forwarded_for_header or not any(peer in net for net in networks):
        return str(peer)
    hops = forwarded_for_header.split(",")[-MAX_FORWARDED_HOPS:]
    current = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return str(current)
        current = address
        if not any(address in net for net in networks):
            return str(address)
    return str(current)


def source_allowed(source: str, allowed_networks: Sequence[str]) -> bool:
    """Empty means anywhere; otherwise the source must be a valid address inside one of them."""
    if not allowed_networks:
        return True
    address = _address(source)
    if address is None:
        return False
    try:
        networks = _networks(tuple(allowed_networks))
    except ValueError:
        return False  # a stored CIDR that does not parse admits nobody rather than everybody
    return any(address in net for net in networks)


# --- login ---------------------------------------------------------------------------------------


def _refusal_reason(user: User, source: str, now: datetime) -> str | None:
    """Why an account whose password was right may still not log in, or `None`."""
    today = now.date()
    if user.status is not UserStatus.ACTIVE:
        return f"status_{user.status.value}"
    if user.role is Role.RESEARCHER:
        institution = user.institution
        if institution is None:
            return "no_institution"
        if not institution.authorised_from <= today <= institution.authorised_until:
            return "institution_not_authorised"
        if not source_allowed(source, institution.allowed_networks):
            return "source_not_allowed"
    if user.statement_valid_until is None or user.statement_valid_until < today:
        return "no_valid_statement"
    return None


# Built once: building a statement costs more than running it, and these run on every login.
_FIND_USER = (
    select(User).options(joinedload(User.institution)).where(User.username == bindparam("username"))
)
_TOKENS_ON_LOAN = (
    select(TotpToken)
    .where(TotpToken.user_id == bindparam("user_id"), TotpToken.state == TokenState.ON_LOAN)
    .order_by(TotpToken.id)
)


def log_in(
    session: Session,
    settings: Settings,
    username: str,
    password: str,
    code: str,
    source: str,
    user_agent: str,
    now: datetime,
) -> tuple[UserSession, str]:
    """Open a session when every check passes; returns it with the cookie secret.

    Order: throttle first (before any expensive or revealing work), then the password (against
    a dummy hash for unknown users), then the account's standing (status, institution and its
    networks, confidentiality statement), then the code of a token on loan.

    Two transactions. The checks only read, and end with a commit (of nothing, unless the caller
    left work pending). The second starts by consuming the code's time step and opens the
    session, so the caller's commit makes the code spent and the session real together. Starting
    with that write matters on SQLite: a transaction that read before another one committed
    cannot write any more ("database is locked"); one whose first statement writes simply waits.

    On refusal the session is rolled back, the failure (attempt row and audit event) is committed
    in a transaction of its own, and `AuthFailed` with one generic message is raised, or
    `Throttled` (429 with a retry time) when too many failures came first.
    """
    name = normalise_username(username)
    verdict = throttle.check_throttle(session, settings, name, source, now)
    if verdict.retry_after:
        _refuse_throttled(session, name, source, verdict)

    user = None
    if len(name) <= MAX_USERNAME_LENGTH:
        user = session.scalars(_FIND_USER, {"username": name}).unique().one_or_none()
    if user is None or user.password_hash is None:
        passwords.verify_dummy(password)
        _refuse(session, name, source, now, "unknown_user" if user is None else "no_password", user)
    ok, new_hash = passwords.verify_password(user.password_hash, password)
    if not ok:
        _refuse(session, name, source, now, "wrong_password", user)
    reason = _refusal_reason(user, source, now)
    if reason is not None:
        _refuse(session, name, source, now, reason, user)
    tokens = session.scalars(_TOKENS_ON_LOAN, {"user_id": user.id}).all()
    if not tokens:
        _refuse(session, name, source, now, "no_token", user)
    matches = totp.match_tokens(settings, tokens, code, now)
    if not matches:
        _refuse(session, name, source, now, "wrong_code", user)
    user_id = user.id
    session.commit()  # end the reading transaction (see above)

    serial = _consume_first(session, matches)
    user = session.get(User, user_id)
    if serial is None or user is None:
        _refuse(session, name, source, now, "wrong_code", user)
    # Standing is not checked again here: should the account be suspended in these milliseconds,
    # its sessions are refused on every request anyway (`sessions.find_session`).
    if new_hash is not None:
        user.password_hash = new_hash  # argon2 parameters changed since this hash was made
    user_session, secret = open_session(session, user, source, user_agent, settings, now)
    user_session.stepped_up_at = now  # the login itself was a fresh code
    throttle.record_attempt(session, name, source, True, now)
    audit.record(
        session,
        "login_succeeded",
        actor=user,
        object_type="user_session",
        object_id=user_session.id,
        source=source,
        details={"token_serial": serial, "rehashed": new_hash is not None},
    )
    return user_session, secret


def _consume_first(session: Session, matches: Sequence[totp.Match]) -> str | None:
    """Spend the first matching step not spent yet; the serial of its token, or `None`."""
    for match in matches:
        try:
            if totp.consume_step(session, match.token_id, match.step):
                return match.serial
        except OperationalError:
            # Only SQLite, and only should a transaction read before this write after all: the
            # other login won, and this one is refused like a replay.
            return None
    return None


def _refuse(
    session: Session, name: str, source: str, now: datetime, reason: str, user: User | None
) -> NoReturn:
    user_id = user.id if user is not None else None
    session.rollback()
    throttle.record_attempt(session, name, source, False, now)
    session.flush()  # write first, read after: see `log_in` on SQLite
    audit.record(
        session,
        "login_failed",
        actor=session.get(User, user_id) if user_id is not None else None,
        object_type="user" if user_id is not None else "",
        object_id=user_id if user_id is not None else "",
        source=source,
        details={"username": throttle.account_key(name), "reason": reason},
    )
    session.commit()
    raise AuthFailed(GENERIC_FAILURE)


def _refuse_throttled(
    session: Session, name: str, source: str, verdict: throttle.Verdict
) -> NoReturn:
    # Refused attempts are not counted as failures: the delay does not grow while an attacker
    # keeps knocking, and it ends on time once they stop.
    session.rollback()
    audit.record(
        session,
        "login_throttled",
        source=source,
        details={
            "username": throttle.account_key(name),
            "scope": verdict.scope,
            "retry_after": verdict.retry_after,
        },
    )
    session.commit()
    raise throttle.Throttled(verdict.retry_after, verdict.scope)
