"""Plain factory functions for authentication tests (and anyone who needs a user who can log in):
rows written straight to the database with sensible defaults, so a test states only what matters.

`make_user` returns a `MadeUser`: the row, its password, and the plaintext seed of the token on
loan, so a test can compute codes with pyotp exactly as the user's hardware token would.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pyotp
from sqlalchemy.orm import Session

from orchestrator import passwords, totp
from orchestrator.config import Settings
from orchestrator.models import (
    Institution,
    Role,
    TokenKind,
    TokenState,
    TotpToken,
    User,
    UserStatus,
)

DEFAULT_PASSWORD = "correct horse battery staple"
_DIGESTS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}
_UNSET = date.min  # "use the default" for an optional date whose None means "absent"


@functools.cache
def cached_hash(password: str) -> str:
    """argon2 costs ~50 ms a hash; a salted hash may be reused across test users."""
    return passwords.hash_password(password)


def today() -> date:
    return datetime.now(UTC).date()


@dataclass
class MadeToken:
    token: TotpToken
    seed: bytes

    def totp(self) -> pyotp.TOTP:
        return pyotp.TOTP(
            base64.b32encode(self.seed).decode("ascii"),
            digits=self.token.digits,
            digest=_DIGESTS[self.token.algorithm],
            interval=self.token.period,
        )

    def code(self, at: datetime | None = None, steps: int = 0) -> str:
        """The code shown at `at` (default now), shifted by `steps` periods."""
        moment = (at or datetime.now(UTC)) + timedelta(seconds=steps * self.token.period)
        return self.totp().at(moment)


@dataclass
class MadeUser:
    user: User
    password: str
    token: MadeToken | None

    @property
    def username(self) -> str:
        return self.user.username

    @property
    def seed(self) -> bytes:
        assert self.token is not None, "made without a token"
        return self.token.seed

    def code(self, at: datetime | None = None, steps: int = 0) -> str:
        assert self.token is not None, "made without a token"
        return self.token.code(at, steps)


def make_institution(
    session: Session,
    *,
    name: str | None = None,
    country: str = "NL",
    authorised_from: date | None = None,
    authorised_until: date | None = None,
    allowed_networks: list[str] | None = None,
) -> Institution:
    institution = Institution(
        name=name or f"Institute {secrets.token_hex(4)}",
        country=country,
        authorised_from=authorised_from or today() - timedelta(days=30),
        authorised_until=authorised_until or today() + timedelta(days=365),
        allowed_networks=allowed_networks or [],
    )
    session.add(institution)
    session.flush()
    return institution


def make_totp_token(
    session: Session,
    settings: Settings,
    *,
    user: User | None = None,
    state: TokenState | None = None,
    kind: TokenKind = TokenKind.HARDWARE,
    serial: str | None = None,
    seed: bytes | None = None,
    algorithm: str = "SHA1",
    digits: int = 6,
    period: int = 30,
) -> MadeToken:
    """A token with a real encrypted seed; on loan to `user` when given, else in stock."""
    seed = seed or totp.new_software_seed()
    token = TotpToken(
        serial=serial or f"T-{secrets.token_hex(5)}",
        kind=kind,
        algorithm=algorithm,
        digits=digits,
        period=period,
        seed_encrypted=totp.encrypt_seed(settings, seed),
        state=state or (TokenState.ON_LOAN if user is not None else TokenState.IN_STOCK),
        user_id=user.id if user is not None else None,
        loaned_at=datetime.now(UTC) if user is not None else None,
    )
    session.add(token)
    session.flush()
    return MadeToken(token, seed)


def make_user(
    session: Session,
    settings: Settings,
    *,
    username: str | None = None,
    password: str | None = DEFAULT_PASSWORD,
    role: Role = Role.RESEARCHER,
    status: UserStatus = UserStatus.ACTIVE,
    institution: Institution | None = None,
    statement_valid_until: date | None = _UNSET,
    with_token: bool = True,
    token_kind: TokenKind = TokenKind.HARDWARE,
) -> MadeUser:
    """A user who can log in: password set, statement valid a year, a token on loan, and (for a
    researcher) an authorised institution. Pass arguments to take any of that away."""
    if role is Role.RESEARCHER and institution is None:
        institution = make_institution(session)
    user = User(
        username=username or f"{role.value.replace('_', '-')}-{secrets.token_hex(4)}",
        email="someone@example.org",
        full_name="Some One",
        role=role,
        status=status,
        institution_id=institution.id if institution is not None else None,
        password_hash=cached_hash(password) if password is not None else None,
        statement_signed_at=datetime.now(UTC) - timedelta(days=1),
        statement_valid_until=(
            today() + timedelta(days=365)
            if statement_valid_until is _UNSET
            else statement_valid_until
        ),
    )
    session.add(user)
    session.flush()
    token = make_totp_token(session, settings, user=user, kind=token_kind) if with_token else None
    return MadeUser(user, password or "", token)
