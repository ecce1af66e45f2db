"""Passwords: argon2id with OWASP parameters, rehash on parameter change, and the policy."""

from __future__ import annotations

import unicodedata

import pytest
from argon2 import PasswordHasher, Type

from orchestrator import passwords
from orchestrator.errors import Invalid


def test_hash_password_uses_argon2id_with_owasp_parameters() -> None:
    hashed = passwords.hash_password("a long enough passphrase")

    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_verify_password_correct_accepted_without_rehash() -> None:
    hashed = passwords.hash_password("a long enough passphrase")

    assert passwords.verify_password(hashed, "a long enough passphrase") == (True, None)


def test_verify_password_wrong_refused() -> None:
    hashed = passwords.hash_password("a long enough passphrase")

    assert passwords.verify_password(hashed, "a long enough passphrasE") == (False, None)


def test_verify_password_old_parameters_returns_new_hash() -> None:
    old = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1, type=Type.ID)
    stored = old.hash("a long enough passphrase")

    ok, new_hash = passwords.verify_password(stored, "a long enough passphrase")

    assert ok
    assert new_hash is not None
    assert new_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert passwords.verify_password(new_hash, "a long enough passphrase") == (True, None)


def test_verify_password_old_parameters_wrong_password_no_rehash() -> None:
    stored = PasswordHasher(time_cost=1, memory_cost=8192).hash("a long enough passphrase")

    assert passwords.verify_password(stored, "something else entirely") == (False, None)


def test_verify_password_composed_and_decomposed_accents_match() -> None:
    composed = unicodedata.normalize("NFC", "wachtwoord met één accent")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed

    hashed = passwords.hash_password(composed)

    assert passwords.verify_password(hashed, decomposed) == (True, None)


def test_verify_password_lone_surrogate_is_a_mismatch_not_an_error() -> None:
    hashed = passwords.hash_password("a long enough passphrase")

    assert passwords.verify_password(hashed, "\ud800 a long enough") == (False, None)


def test_verify_password_malformed_hash_is_a_mismatch() -> None:
    assert passwords.verify_password("not-a-hash", "whatever it is") == (False, None)


def test_dummy_hash_made_once_and_is_a_real_argon2id_hash() -> None:
    assert passwords.dummy_hash() is passwords.dummy_hash()
    assert passwords.dummy_hash().startswith("$argon2id$v=19$m=19456,t=2,p=1$")


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",
        "twelve chars",  # exactly 12, all lower case, a space: no composition rules
        "x" * 128,
        "é" * 12,
    ],
)
def test_check_password_policy_acceptable(password: str) -> None:
    passwords.check_password_policy(password, "alice")


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("eleven char", "at least 12"),
        ("x" * 129, "at most 128"),
        ("password1234", "too common"),
        ("PassWord1234", "too common"),
        ("qwertyuiop123", "too common"),
        ("wachtwoord123", "too common"),
        ("alice-the-researcher", "must not contain the username"),
        ("ALICE-THE-RESEARCHER", "must not contain the username"),
    ],
)
def test_check_password_policy_refused(password: str, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        passwords.check_password_policy(password, "alice")


def test_check_password_policy_counts_code_points_after_nfkc() -> None:
    # Eleven precomposed characters written as 22 code points (base letter + combining accent).
    decomposed = unicodedata.normalize("NFD", "é" * 11)
    assert len(decomposed) == 22

    with pytest.raises(Invalid, match="at least 12"):
        passwords.check_password_policy(decomposed, "alice")


def test_check_password_policy_equal_to_username_refused() -> None:
    with pytest.raises(Invalid, match="must not contain the username"):
        passwords.check_password_policy("Researcher.Number.One", "researcher.number.one")


def test_check_password_policy_two_letter_username_inside_allowed() -> None:
    passwords.check_password_policy("enjoy the long walk", "jo")


def test_common_passwords_list_shipped_and_lower_case() -> None:
    common = passwords.common_passwords()

    assert len(common) > 2000
    assert all(entry == entry.lower() and len(entry) >= 12 for entry in common)
