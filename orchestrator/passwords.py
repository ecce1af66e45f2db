"""Passwords: argon2id hashing with OWASP parameters, verification with rehash, and the policy a
new password must meet (length and a common-password list; no composition rules, NIST 800-63B).
"""

from __future__ import annotations

import functools
import secrets
import unicodedata
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from orchestrator.errors import Invalid

# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1.
HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
MIN_LENGTH = 12
MAX_LENGTH = 128
# A username this short is too common a substring to forbid inside passwords.
MIN_USERNAME_CHECKED_INSIDE = 3


def _encode(password: str) -> bytes:
    """NFKC, then UTF-8. The same password typed on any keyboard or input method gives the same
    bytes; a lone surrogate (possible from JSON) is kept as bytes rather than raising."""
    return unicodedata.normalize("NFKC", password).encode("utf-8", "surrogatepass")


def hash_password(password: str) -> str:
    return HASHER.hash(_encode(password))


def verify_password(password_hash: str, password: str) -> tuple[bool, str | None]:
    """Whether `password` matches; on a match, also a new hash when the stored one was made with
    other parameters (store it in the same transaction), else `None`."""
    try:
        HASHER.verify(password_hash, _encode(password))
    except (VerificationError, InvalidHashError):
        return False, None
    if HASHER.check_needs_rehash(password_hash):
        return True, hash_password(password)
    return True, None


@functools.cache
def dummy_hash() -> str:
    """A hash of a random password, made once: verifying against it costs what a real verify
    costs, so an unknown username answers as slowly as a wrong password."""
    return hash_password(secrets.token_urlsafe(32))


def verify_dummy(password: str) -> None:
    """Spend the time of one verify and learn nothing (for unknown users)."""
    verify_password(dummy_hash(), password)


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list (lower case, 12+ characters), loaded once."""
    text = resources.files("orchestrator").joinpath("data/common-passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def check_password_policy(password: str, username: str) -> None:
    """Raise `Invalid` with a message the user can act on when `password` may not be used.

    Length counts code points after NFKC, so composed and decomposed accents count alike.
    """
    normalised = unicodedata.normalize("NFKC", password)
    length = len(normalised)
    if length < MIN_LENGTH:
        raise Invalid(f"The password must have at least {MIN_LENGTH} characters.")
    if length > MAX_LENGTH:
        raise Invalid(f"The password must have at most {MAX_LENGTH} characters.")
    folded = normalised.casefold()
    if folded in common_passwords():
        raise Invalid("This password is too common: choose one that is harder to guess.")
    name = unicodedata.normalize("NFKC", username).casefold().strip()
    if name and (folded == name or (len(name) >= MIN_USERNAME_CHECKED_INSIDE and name in folded)):
        raise Invalid("The password must not contain the username.")
