"""Institution routes under `/api/institutions`: list, read, create and update (data stewards)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from orchestrator import institutions
from orchestrator.api.access import allow
from orchestrator.api.deps import CurrentPrincipal, SessionDep, SettingsDep, request_source
from orchestrator.policy import Action
from orchestrator.schemas import (
    InstitutionCreate,
    InstitutionPage,
    InstitutionRead,
    InstitutionUpdate,
)

router = APIRouter(prefix="/api/institutions", tags=["institutions"])

InstitutionId = Annotated[int, Path(ge=1, le=2_147_483_647)]
Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


@router.get("")
def list_institutions(
    principal: CurrentPrincipal, session: SessionDep, limit: Limit = 50, offset: Offset = 0
) -> InstitutionPage:
    """The institutions the caller may see: all for staff who read them, else their own."""
    allow(principal, Action.INSTITUTION_READ)
    items, total = institutions.list_institutions(
        session, principal.user, limit=limit, offset=offset
    )
    return InstitutionPage(
        items=[InstitutionRead.model_validate(i) for i in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.post("", status_code=201)
def create_institution(
    body: InstitutionCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> InstitutionRead:
    allow(principal, Action.INSTITUTION_MANAGE)
    institution = institutions.create_institution(
        session,
        settings,
        name=body.name,
        country=body.country,
        authorised_from=body.authorised_from,
        authorised_until=body.authorised_until,
        allowed_networks=body.allowed_networks,
        actor=principal.user,
        source=request_source(request, settings),
    )
    return InstitutionRead.model_validate(institution)


@router.get("/{institution_id}")
def get_institution(
    institution_id: InstitutionId, principal: CurrentPrincipal, session: SessionDep
) -> InstitutionRead:
    institution = institutions.get_institution(session, institution_id)
    allow(principal, Action.INSTITUTION_READ, institution)
    return InstitutionRead.model_validate(institution)


@router.patch("/{institution_id}", responses={409: {"description": "Stale `version`."}})
def update_institution(
    institution_id: InstitutionId,
    body: InstitutionUpdate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> InstitutionRead:
    """Change the fields given; `version` must be the one last read, else 409."""
    institution = institutions.get_institution(session, institution_id)
    allow(principal, Action.INSTITUTION_MANAGE, institution)
    institutions.update_institution(
        session,
        settings,
        institution,
        version=body.version,
        actor=principal.user,
        source=request_source(request, settings),
        name=body.name,
        country=body.country,
        authorised_from=body.authorised_from,
        authorised_until=body.authorised_until,
        allowed_networks=body.allowed_networks,
    )
    return InstitutionRead.model_validate(institution)
