"""PSKC import (RFC 6030): plain and pre-shared-key files, all-or-nothing, hostile XML refused.

Fixtures are written here with python-pskc's own writer (so they are real PSKC), or by hand
where a file must be broken in a way the writer cannot produce.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pskc
import pytest
from admin_factories import make_token
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator import tokens, totp
from orchestrator.config import Environment, Settings
from orchestrator.errors import Conflict, Invalid
from orchestrator.models import AuditEvent, TokenKind, TokenState, TotpToken

TOTP_URI = "urn:ietf:params:xml:ns:keyprov:pskc:totp"
HOTP_URI = "urn:ietf:params:xml:ns:keyprov:pskc:hotp"
PSK_HEX = "000102030405060708090a0b0c0d0e0f"
SEED = bytes(range(20))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(environment=Environment.TEST, data_dir=tmp_path)


def pskc_file(keys: list[dict[str, object]], psk_hex: str | None = None, mac: bool = True) -> bytes:
    """A PSKC document with these keys (python-pskc attribute names), encrypted if `psk_hex`."""
    container = pskc.PSKC()
    for fields in keys:
        container.add_key(**{"algorithm": TOTP_URI, "secret": SEED, **fields})  # type: ignore[arg-type]
    if psk_hex is not None:
        container.encryption.setup_preshared_key(key=bytes.fromhex(psk_hex))
        if not mac:
            container.mac.algorithm = None
    out = io.BytesIO()
    container.write(out)
    return out.getvalue()


def token_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(TotpToken)) or 0


def test_pskc_plain_file_imported_in_stock(db_session: Session, settings: Settings) -> None:
    data = pskc_file(
        [
            {"serial": "KL-0001"},
            {
                "serial": "KL-0002",
                "algorithm_suite": "HMAC-SHA256",
                "response_length": 8,
                "time_interval": 60,
            },
        ]
    )

    imported = tokens.import_pskc(db_session, settings, data, source="batch1.pskc")

    first, second = imported
    assert (first.serial, first.algorithm, first.digits, first.period) == ("KL-0001", "SHA1", 6, 30)
    assert (second.algorithm, second.digits, second.period) == ("SHA256", 8, 60)
    assert all(t.kind is TokenKind.HARDWARE and t.state is TokenState.IN_STOCK for t in imported)
    assert first.source == "batch1.pskc"
    assert totp.decrypt_seed(settings, first.seed_encrypted) == SEED
    assert SEED.hex() not in first.seed_encrypted
    events = db_session.scalars(
        select(AuditEvent).where(AuditEvent.action == "token_imported")
    ).all()
    assert sorted(e.details["serial"] for e in events) == ["KL-0001", "KL-0002"]


def test_pskc_encrypted_file_imported_with_psk(db_session: Session, settings: Settings) -> None:
    data = pskc_file([{"serial": "ENC-1"}, {"serial": "ENC-2"}], psk_hex=PSK_HEX)

    imported = tokens.import_pskc(db_session, settings, data, source="e.pskc", psk_hex=PSK_HEX)

    assert [t.serial for t in imported] == ["ENC-1", "ENC-2"]
    assert totp.decrypt_seed(settings, imported[0].seed_encrypted) == SEED


def test_pskc_encrypted_file_without_psk_refused(db_session: Session, settings: Settings) -> None:
    data = pskc_file([{"serial": "ENC-1"}], psk_hex=PSK_HEX)

    with pytest.raises(Invalid) as caught:
        tokens.import_pskc(db_session, settings, data, source="e.pskc")

    assert caught.value.details["problems"] == [
        {"serial": "ENC-1", "problem": "the seed is encrypted: give the pre-shared key"}
    ]
    assert token_count(db_session) == 0


@pytest.mark.parametrize("wrong", ["00" * 16, "ff" * 16, PSK_HEX[:-2] + "ee"])
def test_pskc_wrong_psk_refused(db_session: Session, settings: Settings, wrong: str) -> None:
    data = pskc_file([{"serial": "ENC-1"}], psk_hex=PSK_HEX)

    with pytest.raises(Invalid) as caught:
        tokens.import_pskc(db_session, settings, data, source="e.pskc", psk_hex=wrong)

    assert "cannot be decrypted" in caught.value.details["problems"][0]["problem"]
    assert token_count(db_session) == 0


@pytest.mark.parametrize("bad", ["zz" * 16, "0102", "00" * 17])
def test_pskc_malformed_psk_refused(db_session: Session, settings: Settings, bad: str) -> None:
    data = pskc_file([{"serial": "ENC-1"}], psk_hex=PSK_HEX)

    with pytest.raises(Invalid, match="pre-shared key"):
        tokens.import_pskc(db_session, settings, data, source="e.pskc", psk_hex=bad)


def test_pskc_cbc_without_mac_refused(db_session: Session, settings: Settings) -> None:
    data = pskc_file([{"serial": "NOMAC"}], psk_hex=PSK_HEX, mac=False)

    with pytest.raises(Invalid) as caught:
        tokens.import_pskc(db_session, settings, data, source="m.pskc", psk_hex=PSK_HEX)

    assert "no MAC" in caught.value.details["problems"][0]["problem"]


def test_pskc_non_totp_key_refuses_whole_file(db_session: Session, settings: Settings) -> None:
    data = pskc_file([{"serial": "OK-1"}, {"serial": "HOTP-1", "algorithm": HOTP_URI}])

    with pytest.raises(Invalid, match="1 of 2 keys") as caught:
        tokens.import_pskc(db_session, settings, data, source="mixed.pskc")

    assert caught.value.details["problems"][0]["serial"] == "HOTP-1"
    assert "not a TOTP key" in caught.value.details["problems"][0]["problem"]
    assert token_count(db_session) == 0


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"serial": None}, "no serial"),
        ({"serial": "has space"}, "no serial"),
        ({"serial": "S", "secret": b"short"}, "seed must have"),
        ({"serial": "S", "response_length": 10}, "10 digits"),
        ({"serial": "S", "time_interval": 5}, "time step"),
        ({"serial": "S", "algorithm_suite": "HMAC-MD5"}, "unsupported hash"),
        ({"serial": "S", "response_encoding": "HEXADECIMAL"}, "decimal"),
    ],
)
def test_pskc_bad_key_refused(
    db_session: Session, settings: Settings, fields: dict[str, object], problem: str
) -> None:
    data = pskc_file([fields])

    with pytest.raises(Invalid) as caught:
        tokens.import_pskc(db_session, settings, data, source="bad.pskc")

    assert problem in caught.value.details["problems"][0]["problem"]


def test_pskc_duplicate_serials_in_file_refused(db_session: Session, settings: Settings) -> None:
    data = pskc_file([{"serial": "D-1"}, {"serial": "D-2"}, {"serial": "D-1"}])

    with pytest.raises(Conflict) as caught:
        tokens.import_pskc(db_session, settings, data, source="dup.pskc")

    assert caught.value.details == {"duplicates": ["D-1"]}
    assert token_count(db_session) == 0


def test_pskc_serials_already_in_inventory_refused_all_or_nothing(
    db_session: Session, settings: Settings
) -> None:
    make_token(db_session, serial="OLD-2")
    make_token(db_session, serial="OLD-4")
    before = token_count(db_session)
    data = pskc_file([{"serial": f"OLD-{n}"} for n in range(1, 6)])

    with pytest.raises(Conflict, match="nothing was imported") as caught:
        tokens.import_pskc(db_session, settings, data, source="again.pskc")

    assert caught.value.details == {"duplicates": ["OLD-2", "OLD-4"]}
    assert token_count(db_session) == before


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE KeyContainer [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<KeyContainer xmlns="urn:ietf:params:xml:ns:keyprov:pskc" Version="1.0">
 <KeyPackage><DeviceInfo><SerialNo>&xxe;</SerialNo></DeviceInfo></KeyPackage>
</KeyContainer>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<KeyContainer xmlns="urn:ietf:params:xml:ns:keyprov:pskc">&lol9;</KeyContainer>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE KeyContainer SYSTEM "http://127.0.0.1:9/pskc.dtd">
<KeyContainer xmlns="urn:ietf:params:xml:ns:keyprov:pskc" Version="1.0"/>"""


@pytest.mark.parametrize("data", [XXE, BILLION_LAUGHS, EXTERNAL_DTD], ids=["xxe", "lol", "dtd"])
def test_pskc_doctype_refused_fast(db_session: Session, settings: Settings, data: bytes) -> None:
    started = time.monotonic()

    with pytest.raises(Invalid, match="DOCTYPE"):
        tokens.import_pskc(db_session, settings, data, source="evil.pskc")

    assert time.monotonic() - started < 5
    assert token_count(db_session) == 0


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not xml at all",
        b"<KeyContainer",
        b'<?xml version="1.0"?><Other xmlns="urn:x"/>',
        b'<KeyContainer xmlns="urn:ietf:params:xml:ns:keyprov:pskc" Version="2.0"/>',
        b'<KeyContainer xmlns="urn:ietf:params:xml:ns:keyprov:pskc" Version="1.0"/>',
        "<a>\u00e9</a>".encode("latin-1"),
    ],
)
def test_pskc_not_pskc_refused(db_session: Session, settings: Settings, data: bytes) -> None:
    with pytest.raises(Invalid):
        tokens.import_pskc(db_session, settings, data, source="x.pskc")


def test_pskc_oversized_file_refused(db_session: Session, settings: Settings) -> None:
    data = b" " * (tokens.MAX_PSKC_BYTES + 1)

    with pytest.raises(tokens.PayloadTooLarge) as caught:
        tokens.import_pskc(db_session, settings, data, source="big.pskc")

    assert caught.value.status_code == 413


def test_pskc_suite_names_map_to_hashes() -> None:
    assert tokens._hash_name(None) == "SHA1"
    assert tokens._hash_name("HMAC-SHA-1") == "SHA1"
    assert tokens._hash_name("HashAlgorithm=SHA-512") == "SHA512"
    assert tokens._hash_name("hmac-sha256") == "SHA256"
    assert tokens._hash_name("SHA3-256") is None


TEMPLATE = """<?xml version="1.0"?>
<KeyContainer xmlns="urn:ietf:params:xml:ns:keyprov:pskc" Version="1.0"><KeyPackage>
 <DeviceInfo><SerialNo>S1</SerialNo><StartDate>{date}</StartDate></DeviceInfo>
 <Key Id="1" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp">
  <AlgorithmParameters><ResponseFormat Length="{length}" Encoding="DECIMAL"/></AlgorithmParameters>
  <Data><Secret><PlainValue>{secret}</PlainValue></Secret>
   <TimeInterval><PlainValue>{interval}</PlainValue></TimeInterval></Data>
 </Key></KeyPackage></KeyContainer>"""
GOOD = {
    "date": "2026-01-01T00:00:00Z",
    "length": "6",
    "secret": "MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=",
    "interval": "30",
}


def test_pskc_hand_written_template_is_valid(db_session: Session, settings: Settings) -> None:
    (token,) = tokens.import_pskc(
        db_session, settings, TEMPLATE.format(**GOOD).encode(), source="t.pskc"
    )

    assert totp.decrypt_seed(settings, token.seed_encrypted) == b"12345678901234567890"


@pytest.mark.parametrize(
    "bad",
    [
        {"date": "not a date"},
        {"length": "abc"},
        {"length": "9" * 5000},
        {"secret": "!!!not base64"},
        {"secret": ""},
        {"interval": "abc"},
        {"interval": "-30"},
    ],
    ids=["date", "length", "huge-length", "base64", "empty-secret", "interval", "negative"],
)
def test_pskc_malformed_values_refused_not_crashing(
    db_session: Session, settings: Settings, bad: dict[str, str]
) -> None:
    data = TEMPLATE.format(**{**GOOD, **bad}).encode()

    with pytest.raises(Invalid) as caught:
        tokens.import_pskc(db_session, settings, data, source="m.pskc")

    assert len(caught.value.message) < 200
    assert token_count(db_session) == 0


def test_pskc_triple_des_refused(db_session: Session, settings: Settings) -> None:
    data = pskc_file([{"serial": "3DES-1"}], psk_hex=PSK_HEX).replace(
        b"xmlenc#aes128-cbc", b"xmlenc#tripledes-cbc"
    )

    with pytest.raises(Invalid) as caught:
        tokens.import_pskc(db_session, settings, data, source="d.pskc", psk_hex=PSK_HEX)

    assert "not supported" in caught.value.details["problems"][0]["problem"]
