"""The TOTP token inventory: PSKC import (RFC 6030), the loan state machine, software enrolment.

States (hardware): in_stock → on_loan(user) → returned | lost | revoked; returned → in_stock
(re-issue after a check) or revoked; in_stock → revoked (retired); lost → revoked (written
off). Software tokens are created on loan by enrolment and only become lost or revoked: their
seed was shown to someone, so they are never returned to stock. Every other move is a `Conflict`
that names the current state. Leaving on_loan ends the holder's sessions at once. Every change
is audited in the caller's transaction.
"""

from __future__ import annotations

import binascii
import io
import re
import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from xml.parsers import expat

import segno
from pskc import PSKC
from pskc.exceptions import DecryptionError, PSKCError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator import audit, policy, sessions, totp
from orchestrator.accounts import clean_reason
from orchestrator.config import Settings
from orchestrator.errors import Conflict, Forbidden, Invalid, KluisError, NotFound
from orchestrator.models import (
    TokenKind,
    TokenState,
    TotpToken,
    User,
    UserStatus,
    utcnow,
)

MAX_PSKC_BYTES = 5 * 1024 * 1024  # a vendor file of 10,000 tokens is about 15 MiB unindented
MAX_PSKC_KEYS = 5000
MAX_SOURCE_LENGTH = 255
MIN_SEED_BYTES = 16  # RFC 4226 section 4: at least 128 bits
MAX_SEED_BYTES = 64
ALLOWED_DIGITS = (6, 7, 8)
MIN_PERIOD, MAX_PERIOD = 10, 300
SERIAL_PATTERN = re.compile(r"[\x21-\x7e]{1,64}")  # printable ASCII without spaces
PSK_LENGTHS = (16, 24, 32)  # AES-128, -192, -256
# Seed encryption accepted (XML Encryption names): AES-CBC (with a MAC, checked below) and AES key
# wrap (RFC 3394, integrity built in). Triple DES and others are refused.
CIPHERS = frozenset(
    {"aes128-cbc", "aes192-cbc", "aes256-cbc", "kw-aes128", "kw-aes192", "kw-aes256"}
)
# Hash names as they appear in Suite / HashAlgorithm values, most specific first.
HASHES = (("SHA512", "SHA512"), ("SHA256", "SHA256"), ("SHA1", "SHA1"))
QR_SCALE = 4


# What python-pskc raises for malformed content besides its own errors (int(), base64, dates, the
# cipher's IV length): a hostile file must get a 422, never a 500.
MALFORMED: tuple[type[Exception], ...] = (ValueError, TypeError, ArithmeticError, LookupError)


class PayloadTooLarge(KluisError):
    status_code = 413
    code = "payload_too_large"


# --- PSKC reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PskcKey:
    """One TOTP key read from a PSKC file; `seed` is the raw secret (never logged or shown)."""

    serial: str
    algorithm: str
    digits: int
    period: int
    seed: bytes = field(repr=False)


def _refuse(message: str, problems: list[dict[str, str]] | None = None) -> Invalid:
    return Invalid(message, {"problems": problems} if problems else {})


def refuse_dtd(data: bytes) -> None:
    """Refuse XML with a document type declaration before any XML library sees it.

    PSKC needs no DTD; declarations are how entity expansion (billion laughs) and external
    entities (XXE) get in. Expat calls the doctype handler before expanding anything.
    """

    def no_doctype(*_args: object) -> None:
        raise _refuse("The file has a DOCTYPE declaration; PSKC files have none.")

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = no_doctype
    parser.EntityDeclHandler = no_doctype
    parser.ExternalEntityRefHandler = lambda *_args: 0
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise _refuse(f"The file is not well-formed XML (line {exc.lineno}).") from None


def _psk(psk_hex: str | None) -> bytes | None:
    if psk_hex is None or not psk_hex.strip():
        return None
    text = psk_hex.strip().replace(" ", "").replace(":", "")
    try:
        key = binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise _refuse("The pre-shared key must be given in hexadecimal.") from None
    if len(key) not in PSK_LENGTHS:
        raise _refuse("The pre-shared key must be 16, 24 or 32 bytes (32, 48 or 64 hex digits).")
    return key


def _hash_name(suite: str | None) -> str | None:
    """SHA1, SHA256 or SHA512 from a Suite value such as "HMAC-SHA256" or "HashAlgorithm=SHA-1"
    (default SHA1, RFC 6238 section 1.2); `None` when it names another hash."""
    if not suite:
        return "SHA1"
    flat = suite.upper().replace("-", "").replace("_", "")
    for needle, name in HASHES:
        if needle in flat:
            return name
    return None


def _is_totp(algorithm_uri: str | None) -> bool:
    return bool(algorithm_uri) and str(algorithm_uri).lower().rstrip("/").endswith(
        (":totp", "#totp", "/totp")
    )


def read_pskc(data: bytes, psk_hex: str | None = None) -> list[PskcKey]:
    """Every key of a PSKC file, or `Invalid` listing every problem (all or nothing).

    Plain files and files encrypted with a pre-shared key (e.g. AES-128-CBC with an HMAC-SHA1
    `ValueMAC`, RFC 6030 sections 6.1-6.2) are read; CBC-encrypted seeds without a MAC are
    refused, because an altered ciphertext would otherwise go unnoticed.
    """
    if len(data) > MAX_PSKC_BYTES:
        raise PayloadTooLarge(f"A PSKC file may have at most {MAX_PSKC_BYTES // 1024 // 1024} MiB.")
    refuse_dtd(data)
    key_bytes = _psk(psk_hex)
    try:
        container = PSKC(io.BytesIO(data))
    except PSKCError as exc:
        raise _refuse(f"The file is not a PSKC key container: {exc}.") from None
    except MALFORMED as exc:  # python-pskc parses numbers, dates and base64 as it reads
        raise _refuse(f"The file has a malformed value ({type(exc).__name__}).") from None
    if key_bytes is not None:
        container.encryption.key = key_bytes
    keys = list(container.keys)
    if not keys:
        raise _refuse("The file holds no keys.")
    if len(keys) > MAX_PSKC_KEYS:
        raise _refuse(f"A PSKC file may hold at most {MAX_PSKC_KEYS} keys.")
    read: list[PskcKey] = []
    problems: list[dict[str, str]] = []
    for number, key in enumerate(keys, start=1):
        serial = str(key.serial or "").strip()
        label = serial if SERIAL_PATTERN.fullmatch(serial) else f"key {number}"
        try:
            read.append(_read_key(key, serial, key_bytes is not None))
        except Invalid as exc:
            problems.append({"serial": label, "problem": exc.message})
        except (PSKCError, ValueError, TypeError, ArithmeticError, LookupError) as exc:
            problem = f"malformed key data ({type(exc).__name__})"
            problems.append({"serial": label, "problem": problem})
    if problems:
        raise _refuse(
            f"{len(problems)} of {len(keys)} keys cannot be imported; nothing was imported.",
            problems,
        )
    duplicates = sorted(serial for serial, n in Counter(k.serial for k in read).items() if n > 1)
    if duplicates:
        raise Conflict(
            "Serials occur more than once in the file; nothing was imported.",
            {"duplicates": duplicates},
        )
    return read


def _read_key(key: Any, serial: str, have_psk: bool) -> PskcKey:
    if not SERIAL_PATTERN.fullmatch(serial):
        raise Invalid("no serial number (DeviceInfo/SerialNo), or one that is not printable ASCII")
    if not _is_totp(key.algorithm):
        raise Invalid(f"not a TOTP key (algorithm {str(key.algorithm)[:80]!r})")
    algorithm = _hash_name(key.algorithm_suite)
    if algorithm is None:
        raise Invalid(f"unsupported hash {str(key.algorithm_suite)[:40]!r}")
    if key.response_encoding and str(key.response_encoding).upper() != "DECIMAL":
        raise Invalid("codes must be decimal")
    digits = key.response_length or 6
    if digits not in ALLOWED_DIGITS:
        shown = digits if isinstance(digits, int) and abs(digits) < 10**6 else "too many"
        raise Invalid(f"{shown} digits; only 6, 7 or 8 are supported")
    try:
        period = key.time_interval or 30
        encrypted = getattr(key, "_secret", None)  # python-pskc keeps the undecrypted value here
        if getattr(encrypted, "cipher_value", None) is not None:
            named = getattr(encrypted, "algorithm", None) or key.device.pskc.encryption.algorithm
            cipher = str(named or "").rsplit("#", 1)[-1].lower()
            if cipher not in CIPHERS:
                raise Invalid(f"seed encryption {cipher[:40]!r} is not supported (AES only)")
            if cipher.endswith("-cbc") and not getattr(encrypted, "mac_value", None):
                raise Invalid("the encrypted seed has no MAC (ValueMAC), so it cannot be trusted")
        seed = key.secret
    except DecryptionError:
        if have_psk:
            raise Invalid("the seed cannot be decrypted with this pre-shared key") from None
        raise Invalid("the seed is encrypted: give the pre-shared key") from None
    if not isinstance(period, int) or not MIN_PERIOD <= period <= MAX_PERIOD:
        raise Invalid(f"time step must be {MIN_PERIOD} to {MAX_PERIOD} seconds")
    if not isinstance(seed, bytes) or not MIN_SEED_BYTES <= len(seed) <= MAX_SEED_BYTES:
        raise Invalid(f"the seed must have {MIN_SEED_BYTES} to {MAX_SEED_BYTES} bytes")
    return PskcKey(serial=serial, algorithm=algorithm, digits=digits, period=period, seed=seed)


def import_pskc(
    session: Session,
    settings: Settings,
    data: bytes,
    *,
    source: str,
    psk_hex: str | None = None,
    actor: User | None = None,
    client: str = "",
) -> list[TotpToken]:
    """Add every key of the file as a hardware token in stock, or nothing at all.

    Serials already in the inventory are a `Conflict` listing them. `source` (the file name) is
    kept on each token; `client` is the caller's address for the audit trail.
    """
    keys = read_pskc(data, psk_hex)
    serials = [key.serial for key in keys]
    existing = set(
        session.scalars(select(TotpToken.serial).where(TotpToken.serial.in_(serials))).all()
    )
    if existing:
        raise Conflict(
            f"{len(existing)} serials are in the inventory already; nothing was imported.",
            {"duplicates": sorted(existing)},
        )
    name = "".join(c for c in source if c.isprintable()).strip()[:MAX_SOURCE_LENGTH]
    tokens = [
        TotpToken(
            serial=key.serial,
            kind=TokenKind.HARDWARE,
            algorithm=key.algorithm,
            digits=key.digits,
            period=key.period,
            seed_encrypted=totp.encrypt_seed(settings, key.seed),
            state=TokenState.IN_STOCK,
            source=name,
        )
        for key in keys
    ]
    session.add_all(tokens)
    session.flush()
    for token in tokens:
        audit.record(
            session,
            "token_imported",
            actor=actor,
            object_type="token",
            object_id=token.id,
            source=client,
            details={"serial": token.serial, "file": name, "algorithm": token.algorithm},
        )
    return tokens


# --- reading the inventory ------------------------------------------------------------------------


def get_token(session: Session, token_id: int) -> TotpToken:
    token = session.get(TotpToken, token_id)
    if token is None:
        raise NotFound("Token not found.")
    return token


def find_token_by_serial(session: Session, serial: str) -> TotpToken | None:
    return session.scalars(
        select(TotpToken).where(TotpToken.serial == serial.strip())
    ).one_or_none()


def list_tokens(
    session: Session,
    viewer: User | None,
    *,
    state: TokenState | None = None,
    kind: TokenKind | None = None,
    user_id: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[TotpToken], int]:
    """One page of the tokens the viewer may see (all for the system), by serial."""
    stmt = select(TotpToken)
    if viewer is not None:
        stmt = policy.visible_tokens(stmt, viewer)
    if state is not None:
        stmt = stmt.where(TotpToken.state == state)
    if kind is not None:
        stmt = stmt.where(TotpToken.kind == kind)
    if user_id is not None:
        stmt = stmt.where(TotpToken.user_id == user_id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    items = session.scalars(stmt.order_by(TotpToken.serial).limit(limit).offset(offset)).all()
    return list(items), total


# --- the state machine ----------------------------------------------------------------------------

TRANSITIONS: Mapping[TokenKind, Mapping[TokenState, frozenset[TokenState]]] = {
    TokenKind.HARDWARE: {
        TokenState.IN_STOCK: frozenset({TokenState.ON_LOAN, TokenState.REVOKED}),
        TokenState.ON_LOAN: frozenset({TokenState.RETURNED, TokenState.LOST, TokenState.REVOKED}),
        TokenState.RETURNED: frozenset({TokenState.IN_STOCK, TokenState.REVOKED}),
        TokenState.LOST: frozenset({TokenState.REVOKED}),
        TokenState.REVOKED: frozenset(),
    },
    TokenKind.SOFTWARE: {
        TokenState.ON_LOAN: frozenset({TokenState.LOST, TokenState.REVOKED}),
    },
}
_VERB = {
    TokenState.ON_LOAN: "assigned",
    TokenState.RETURNED: "returned",
    TokenState.LOST: "reported lost",
    TokenState.REVOKED: "revoked",
    TokenState.IN_STOCK: "put back in stock",
}
_ACTION = {
    TokenState.ON_LOAN: "token_assigned",
    TokenState.RETURNED: "token_returned",
    TokenState.LOST: "token_lost",
    TokenState.REVOKED: "token_revoked",
    TokenState.IN_STOCK: "token_restocked",
}


def can_move(token: TotpToken, to: TokenState) -> bool:
    return to in TRANSITIONS[token.kind].get(token.state, frozenset())


def _move(
    session: Session,
    token: TotpToken,
    to: TokenState,
    *,
    actor: User | None,
    source: str,
    now: datetime,
    details: dict[str, Any] | None = None,
    borrower: User | None = None,
) -> int:
    """Check and make one transition; returns how many sessions of the holder were ended."""
    session.flush()
    session.refresh(token, with_for_update=True)  # lock the row, see a concurrent change
    if not can_move(token, to):
        raise Conflict(
            f"Token {token.serial} is {token.state.value.replace('_', ' ')}: "
            f"a {token.kind.value} token in that state cannot be {_VERB[to]}.",
            {"state": token.state.value, "kind": token.kind.value},
        )
    was_on_loan = token.state is TokenState.ON_LOAN
    holder = session.get(User, token.user_id) if token.user_id is not None else None
    old = token.state
    token.state = to
    if to is TokenState.RETURNED:
        token.returned_at = now
    elif to is TokenState.LOST:
        token.lost_at = now
    elif to is TokenState.REVOKED:
        token.revoked_at = now
    elif to is TokenState.ON_LOAN and borrower is not None:
        token.user_id = borrower.id
        token.loaned_at = now
        token.returned_at = token.lost_at = token.revoked_at = None
        holder = borrower
    elif to is TokenState.IN_STOCK:
        token.user_id = None
        token.loaned_at = None
        token.returned_at = None
    ended = 0
    if was_on_loan and holder is not None:
        ended = sessions.end_all_sessions(session, holder, _ACTION[to], actor=actor, source=source)
    session.flush()
    audit.record(
        session,
        _ACTION[to],
        actor=actor,
        object_type="token",
        object_id=token.id,
        source=source,
        details={
            "serial": token.serial,
            "from": old.value,
            "user_id": holder.id if holder is not None else None,
            "sessions_ended": ended,
            **(details or {}),
        },
    )
    return ended


def _check_can_hold(session: Session, user: User) -> None:
    session.flush()
    session.refresh(user, with_for_update=True)  # serialise concurrent loans to one person
    if user.status not in (UserStatus.ACTIVE, UserStatus.PENDING):
        raise Conflict(f"The account is {user.status.value}: it cannot get a token.")
    current = session.scalars(
        select(TotpToken).where(TotpToken.user_id == user.id, TotpToken.state == TokenState.ON_LOAN)
    ).first()
    if current is not None:
        raise Conflict(
            f"{user.username} has token {current.serial} on loan already; "
            "record its return (or loss) first.",
            {"token_id": current.id},
        )


def assign_token(
    session: Session,
    token: TotpToken,
    user: User,
    *,
    actor: User | None = None,
    source: str = "",
    now: datetime | None = None,
) -> TotpToken:
    """Lend a hardware token in stock to an active or pending user with no token on loan."""
    now = now or utcnow()
    _check_can_hold(session, user)
    _move(session, token, TokenState.ON_LOAN, actor=actor, source=source, now=now, borrower=user)
    return token


def return_token(
    session: Session,
    token: TotpToken,
    *,
    actor: User | None = None,
    source: str = "",
    now: datetime | None = None,
) -> int:
    """The holder gave the token back; their sessions end. Returns sessions ended."""
    return _move(
        session, token, TokenState.RETURNED, actor=actor, source=source, now=now or utcnow()
    )


def report_lost(
    session: Session,
    token: TotpToken,
    *,
    actor: User | None = None,
    source: str = "",
    now: datetime | None = None,
) -> int:
    """The token is lost; the holder's sessions end. Returns sessions ended."""
    return _move(session, token, TokenState.LOST, actor=actor, source=source, now=now or utcnow())


def revoke_token(
    session: Session,
    token: TotpToken,
    *,
    actor: User | None = None,
    reason: str = "",
    source: str = "",
    now: datetime | None = None,
) -> int:
    """The token may never be used again; a holder's sessions end. Returns sessions ended."""
    return _move(
        session,
        token,
        TokenState.REVOKED,
        actor=actor,
        source=source,
        now=now or utcnow(),
        details={"reason": clean_reason(reason, required=False)},
    )


def restock_token(
    session: Session,
    token: TotpToken,
    *,
    actor: User | None = None,
    source: str = "",
    now: datetime | None = None,
) -> TotpToken:
    """A returned hardware token was checked and goes back in stock for re-issue.

    Its last used time step is kept, so no code seen by the previous holder is accepted again.
    """
    _move(session, token, TokenState.IN_STOCK, actor=actor, source=source, now=now or utcnow())
    return token


# --- software tokens ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enrolment:
    """A new software token: show `provisioning_uri` / `qr_svg` to the holder once, then drop."""

    token: TotpToken
    provisioning_uri: str = field(repr=False)
    qr_svg: str = field(repr=False)


def qr_code_svg(text: str) -> str:
    """A standalone SVG (also valid inline in HTML) of a QR code for `text`."""
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="svg", scale=QR_SCALE, xmldecl=False)
    return out.getvalue().decode("utf-8")


def enrol_software_token(
    session: Session,
    settings: Settings,
    user: User,
    *,
    actor: User | None = None,
    source: str = "",
    now: datetime | None = None,
) -> Enrolment:
    """Create a software token on loan to `user` (who has none on loan) and return what the
    authenticator app needs. Refused with `Forbidden` unless software tokens are enabled."""
    if not settings.software_tokens_enabled:
        raise Forbidden(
            "Software tokens are switched off on this installation "
            "(KLUIS_SOFTWARE_TOKENS_ENABLED=false); assign a hardware token instead."
        )
    return create_software_token(session, settings, user, actor=actor, source=source, now=now)


def create_software_token(
    session: Session,
    settings: Settings,
    user: User,
    *,
    actor: User | None = None,
    source: str = "",
    now: datetime | None = None,
    seed: bytes | None = None,
) -> Enrolment:
    """`enrol_software_token` without the configuration check: for demo data and tests."""
    now = now or utcnow()
    _check_can_hold(session, user)
    seed = seed or totp.new_software_seed()
    token = TotpToken(
        serial=f"SW-{secrets.token_hex(6).upper()}",
        kind=TokenKind.SOFTWARE,
        algorithm="SHA1",
        digits=6,
        period=30,
        seed_encrypted=totp.encrypt_seed(settings, seed),
        state=TokenState.ON_LOAN,
        user_id=user.id,
        loaned_at=now,
        source="software enrolment",
    )
    session.add(token)
    session.flush()
    audit.record(
        session,
        "token_enrolled",
        actor=actor,
        object_type="token",
        object_id=token.id,
        source=source,
        details={"serial": token.serial, "user_id": user.id, "kind": "software"},
    )
    uri = totp.provisioning_uri(seed, user.username, token.algorithm, token.digits, token.period)
    return Enrolment(token=token, provisioning_uri=uri, qr_svg=qr_code_svg(uri))
