"""TOTP (RFC 6238): seeds encrypted at rest, code verification within a documented window, and
the single-use rule (a time step once accepted is never accepted again, also under concurrency).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pyotp
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Table, bindparam, or_, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from orchestrator.config import Settings
from orchestrator.errors import Invalid
from orchestrator.models import TotpToken

SEED_KEY_INFO = b"kluis totp seeds"
DIGESTS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}
SOFTWARE_SEED_BYTES = 20  # RFC 4226 section 4: 160 bits for HMAC-SHA1
ISSUER = "Kluis"


# --- seeds at rest -------------------------------------------------------------------------------


def _fernet(settings: Settings) -> Fernet:
    configured = settings.seed_encryption_key
    secret = configured.get_secret_value() if configured else settings.effective_secret_key
    # HKDF turns a passphrase-like secret of any length into a 32-byte key for this purpose only,
    # so the session and CSRF uses of the same secret key stay independent (RFC 5869).
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=SEED_KEY_INFO).derive(
        secret.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt_seed(settings: Settings, raw: bytes) -> str:
    return _fernet(settings).encrypt(raw).decode("ascii")


def decrypt_seed(settings: Settings, token: str) -> bytes:
    """The raw seed; raises `Invalid` when the ciphertext was made with another key or altered."""
    try:
        return _fernet(settings).decrypt(token.encode("ascii"))
    except (InvalidToken, UnicodeEncodeError) as exc:
        raise Invalid("The token seed cannot be decrypted with the configured key.") from exc


# --- verification --------------------------------------------------------------------------------


def is_well_formed(code: str, digits: int) -> bool:
    """Exactly `digits` ASCII digits (`str.isdigit` alone would accept other scripts' digits)."""
    return len(code) == digits and code.isascii() and code.isdigit()


def time_step(now: datetime, period: int) -> int:
    return int(now.timestamp()) // period


def _totp(seed: bytes, algorithm: str, digits: int, period: int) -> pyotp.TOTP:
    digest = DIGESTS.get(algorithm.upper())
    if digest is None:
        raise Invalid(f"Unsupported TOTP algorithm {algorithm!r}.")
    secret = base64.b32encode(seed).decode("ascii")
    return pyotp.TOTP(secret, digits=digits, digest=digest, interval=period)


def verify_code(settings: Settings, token: TotpToken, code: str, now: datetime) -> int | None:
    """The time step `code` belongs to, or `None` when it matches none in the window.

    The window is the current step and the `settings.totp_drift_steps` steps before it (default
    one: a code stays valid for 30 to 60 seconds with a 30-second period). Steps ahead of the
    server clock are never accepted. A code matching a step at or before the token's
    `last_used_step` is refused here already; `consume_step` is what makes that hold under
    concurrency. Malformed codes are refused before any cryptography or database work.
    """
    if not is_well_formed(code, token.digits):
        return None
    totp = _totp(
        decrypt_seed(settings, token.seed_encrypted), token.algorithm, token.digits, token.period
    )
    current = time_step(now, token.period)
    matched = None
    # Compare every step in the window (no early exit) so timing says nothing about which one.
    for step in range(current - settings.totp_drift_steps, current + 1):
        if step >= 0 and hmac.compare_digest(totp.generate_otp(step), code):
            matched = step
    if matched is None:
        return None
    if token.last_used_step is not None and matched <= token.last_used_step:
        return None
    return matched


@dataclass(frozen=True)
class Match:
    """A token whose code matched, with plain values that outlive the reading transaction."""

    token_id: int
    serial: str
    step: int


def match_tokens(
    settings: Settings, tokens: Sequence[TotpToken], code: str, now: datetime
) -> list[Match]:
    """The tokens (of one user) for which `code` is valid now; see `verify_code`."""
    matches = []
    for token in tokens:
        step = verify_code(settings, token, code, now)
        if step is not None:
            matches.append(Match(token.id, token.serial, step))
    return matches


_tokens: Table = TotpToken.__table__  # type: ignore[assignment]
# A plain (Core) UPDATE, built once: it runs on every login and step-up.
_CONSUME = (
    update(_tokens)
    .where(
        _tokens.c.id == bindparam("token_id"),
        or_(_tokens.c.last_used_step.is_(None), _tokens.c.last_used_step < bindparam("step")),
    )
    .values(last_used_step=bindparam("step"))
)


def consume_step(session: Session, token_id: int, step: int) -> bool:
    """Record `step` as used; `False` when it (or a later one) was used already.

    One conditional UPDATE: on PostgreSQL the second of two concurrent transactions waits for the
    row lock and then re-checks the condition against the committed value; on SQLite writers are
    serialised. Either way exactly one caller gets `True` for a given step. Call it in the
    transaction that also opens the session, so both commit or neither does.
    """
    result = session.execute(_CONSUME, {"token_id": token_id, "step": step})
    assert isinstance(result, CursorResult)
    if result.rowcount != 1:
        return False
    # Keep an already loaded object in step with the row (synchronisation was skipped above).
    loaded = session.identity_map.get(identity_key(TotpToken, token_id))
    if loaded is not None:
        session.expire(loaded, ["last_used_step"])
    return True


# --- software tokens (only when settings.software_tokens_enabled) -------------------------------


def new_software_seed() -> bytes:
    return secrets.token_bytes(SOFTWARE_SEED_BYTES)


def provisioning_uri(
    seed: bytes, account: str, algorithm: str = "SHA1", digits: int = 6, period: int = 30
) -> str:
    """The `otpauth://totp/...` URI an authenticator app reads from a QR code."""
    return _totp(seed, algorithm, digits, period).provisioning_uri(name=account, issuer_name=ISSUER)
