"""Audit routes under `/api/audit`: a page of events, chain verification, and a JSON-lines export
for data stewards and ops."""

from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import AwareDatetime
from sqlalchemy import func, select

from orchestrator import audit
from orchestrator.api.access import allow
from orchestrator.api.deps import CurrentPrincipal, SessionDep
from orchestrator.models import AuditEvent
from orchestrator.policy import Action
from orchestrator.schemas import AuditEventRead, AuditPage, AuditVerifyRead

router = APIRouter(prefix="/api/audit", tags=["audit"])

Name = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


@router.get("")
def list_events(
    principal: CurrentPrincipal,
    session: SessionDep,
    action: Name = None,
    object_type: Name = None,
    object_id: Name = None,
    actor: Name = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> AuditPage:
    """Events, newest first, optionally for one action, object or actor."""
    allow(principal, Action.AUDIT_READ)
    stmt = select(AuditEvent)
    if action is not None:
        stmt = stmt.where(AuditEvent.action == action)
    if object_type is not None:
        stmt = stmt.where(AuditEvent.object_type == object_type)
    if object_id is not None:
        stmt = stmt.where(AuditEvent.object_id == object_id)
    if actor is not None:
        stmt = stmt.where(AuditEvent.actor == actor)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(AuditEvent.seq.desc()).limit(limit).offset(offset)).all()
    return AuditPage(
        items=[AuditEventRead.model_validate(r) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/verify")
def verify(principal: CurrentPrincipal, session: SessionDep) -> AuditVerifyRead:
    """Walk the whole chain; name the first row whose link or content is wrong."""
    allow(principal, Action.AUDIT_READ)
    report = audit.verify_chain(session)
    return AuditVerifyRead(
        ok=report.ok,
        checked=report.checked,
        first_broken_seq=report.first_broken_seq,
        reason=report.reason,
    )


@router.get(
    "/export",
    response_class=Response,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "JSON lines."}},
)
def export(
    principal: CurrentPrincipal, session: SessionDep, since: AwareDatetime | None = None
) -> Response:
    """Every event (from `since`, an aware timestamp) as JSON lines, with hashes."""
    allow(principal, Action.AUDIT_EXPORT)
    out = io.StringIO()
    audit.export_jsonl(session, out, since=since)
    return Response(
        out.getvalue(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="kluis-audit.jsonl"'},
    )
