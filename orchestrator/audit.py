"""The audit trail: append-only, hash-chained events written in the caller's transaction.

Each row's hash covers its content and the previous row's hash, so editing or deleting any row
breaks verification from that row on. Appends take the chain head's row lock first (an UPDATE),
which serialises concurrent writers on PostgreSQL and SQLite alike.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orchestrator.models import AuditEvent, AuditHead, User, utcnow

GENESIS_HASH = "0" * 64
SYSTEM_ACTOR = "system"


def _canonical(event: dict[str, Any]) -> bytes:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _content(row: AuditEvent) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": row.at.isoformat(timespec="microseconds"),
        "actor_id": row.actor_id,
        "actor": row.actor,
        "action": row.action,
        "object_type": row.object_type,
        "object_id": row.object_id,
        "source": row.source,
        "details": row.details,
    }


def compute_hash(prev_hash: str, content: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + _canonical(content)).hexdigest()


def record(
    session: Session,
    action: str,
    *,
    actor: User | None = None,
    object_type: str = "",
    object_id: str | int = "",
    source: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the session's transaction; it commits or rolls back with the change.

    `details` must be JSON-serialisable and must never hold secrets (passwords, codes, tokens).
    """
    seq, prev_hash = session.execute(
        update(AuditHead)
        .where(AuditHead.id == 1)
        .values(last_seq=AuditHead.last_seq + 1)
        .returning(AuditHead.last_seq, AuditHead.last_hash)
    ).one()
    row = AuditEvent(
        seq=seq,
        at=utcnow(),
        actor_id=actor.id if actor is not None else None,
        actor=actor.username if actor is not None else SYSTEM_ACTOR,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        source=source[:45],
        details=json.loads(json.dumps(details or {}, default=str)),
        prev_hash=prev_hash,
    )
    row.hash = compute_hash(prev_hash, _content(row))
    session.add(row)
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(last_hash=row.hash))
    return row


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    first_broken_seq: int | None = None
    reason: str = ""


def verify_chain(session: Session, batch: int = 1000) -> ChainReport:
    """Walk the chain from the start; report the first row whose link or content is wrong."""
    prev_hash, expected_seq, checked = GENESIS_HASH, 1, 0
    for row in _iter_rows(session, batch):
        if row.seq != expected_seq:
            return ChainReport(False, checked, expected_seq, f"row {expected_seq} is missing")
        if row.prev_hash != prev_hash:
            return ChainReport(False, checked, row.seq, "link to the previous row is broken")
        if compute_hash(prev_hash, _content(row)) != row.hash:
            return ChainReport(False, checked, row.seq, "content does not match its hash")
        prev_hash, expected_seq, checked = row.hash, expected_seq + 1, checked + 1
    head = session.get(AuditHead, 1)
    if head is None or head.last_seq != checked or head.last_hash != prev_hash:
        return ChainReport(False, checked, checked + 1, "rows after the last one are missing")
    return ChainReport(True, checked)


def _iter_rows(session: Session, batch: int) -> Iterator[AuditEvent]:
    last = 0
    while True:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def export_jsonl(session: Session, out: IO[str], since: datetime | None = None) -> int:
    """Write events as JSON lines (with their hashes, so the export itself can be verified)."""
    count = 0
    for row in _iter_rows(session, 1000):
        if since is not None and row.at < since:
            continue
        out.write(json.dumps({**_content(row), "prev_hash": row.prev_hash, "hash": row.hash}))
        out.write("\n")
        count += 1
    return count
