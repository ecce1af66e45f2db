"""Cost routes: a project's costs (its lead and staff), the quarterly invoice CSV (staff who see
every project's costs), and the tariff versions (read by anyone logged in, added by data
stewards)."""

from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from orchestrator import costs, policy, projects
from orchestrator.api.access import allow, require_step_up
from orchestrator.api.deps import (
    CurrentPrincipal,
    NowDep,
    Principal,
    SessionDep,
    SettingsDep,
    request_source,
)
from orchestrator.errors import Forbidden
from orchestrator.policy import Action
from orchestrator.schemas import (
    ChargeRead,
    InvoiceLineRead,
    ProjectCostsRead,
    QuoteRead,
    TariffCreate,
    TariffRead,
)

router = APIRouter(tags=["costs"])

ProjectCode = Annotated[str, Path(min_length=4, max_length=5, pattern=r"^[0-9]{4,5}$")]
Quarter = Annotated[str, Query(min_length=6, max_length=6, pattern=r"^[0-9]{4}Q[1-4]$")]
# Adding a tariff is the data steward's pricing work, like quoting.
TARIFF_MANAGE = Action.PROJECT_QUOTE


def _allow_all_costs(principal: Principal) -> None:
    """The invoice export: for roles whose cost reading reaches every project, not only the
    projects they lead."""
    user = principal.user
    reach = policy.GRANTS.get(user.role, {}).get(Action.PROJECT_COSTS_READ)
    if not (policy.can(user, Action.PROJECT_COSTS_READ) and reach is policy.Reach.ANY):
        raise Forbidden(f"Your role ({user.role}) may not read the costs of every project.")
    if principal.api_token is not None:
        policy.authorize_scopes(principal.scopes, Action.PROJECT_COSTS_READ)


@router.get("/api/projects/{code}/costs")
def get_project_costs(
    code: ProjectCode, principal: CurrentPrincipal, session: SessionDep, now: NowDep
) -> ProjectCostsRead:
    """The project's costs: for its lead and for staff who read costs; 404 for those who may not
    see the project, 403 for members who are not the lead."""
    project = projects.get_project_by_code(session, code)
    allow(principal, Action.PROJECT_COSTS_READ, project)
    today = now.date()
    summary = costs.project_costs(session, project, today)
    quote = summary.quote
    return ProjectCostsRead(
        project_code=project.code,
        as_of=today,
        tariff_label=quote.tariff_label if quote else None,
        currency=quote.currency if quote else None,
        estimate=QuoteRead.model_validate(summary.quote) if summary.quote else None,
        accepted_quote_total=summary.accepted_total,
        quote_accepted_at=project.quote_accepted_at,
        charges=[ChargeRead.model_validate(c) for c in costs.project_charges(session, project)],
        invoiced=[InvoiceLineRead.model_validate(line) for line in summary.invoiced],
        invoiced_total=summary.invoiced_total,
    )


@router.get(
    "/api/invoices",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "Invoice lines as CSV."}},
)
def export_invoices(principal: CurrentPrincipal, session: SessionDep, quarter: Quarter) -> Response:
    """Every project's invoice lines for a quarter (e.g. 2026Q4) as CSV, computed from the actual
    membership and grant history."""
    _allow_all_costs(principal)
    lines = costs.invoice_lines(session, quarter)
    out = io.StringIO()
    costs.export_invoices_csv(lines, out)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="kluis-invoices-{quarter}.csv"'},
    )


@router.get("/api/tariffs")
def list_tariffs(principal: CurrentPrincipal, session: SessionDep) -> list[TariffRead]:
    """Every tariff version, newest first: the price list is no secret to anyone logged in."""
    return [TariffRead.model_validate(t) for t in costs.list_tariffs(session)]


@router.post("/api/tariffs", status_code=201)
def create_tariff(
    body: TariffCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> TariffRead:
    """Add a tariff version (data stewards, with a recent step-up)."""
    allow(principal, TARIFF_MANAGE)
    require_step_up(principal, settings, now)
    tariff = costs.create_tariff(
        session,
        label=body.label,
        valid_from=body.valid_from,
        currency=body.currency,
        base_fee=body.base_fee,
        per_researcher_month=body.per_researcher_month,
        per_topic_month=body.per_topic_month,
        fee_add_researcher=body.fee_add_researcher,
        fee_add_dataset=body.fee_add_dataset,
        fee_extension=body.fee_extension,
        actor=principal.user,
        source=request_source(request, settings),
    )
    return TariffRead.model_validate(tariff)
