"""The dataset catalogue as every logged-in user sees it: datasets with their topic, description
and versions (availability, number of files, size). Metadata only: no file names, no locations,
never data.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response

from orchestrator import catalogue, policy
from orchestrator.api.deps import SessionDep
from orchestrator.errors import AuthFailed
from orchestrator.policy import Action
from orchestrator.web.browser import PagePrincipal
from orchestrator.web.i18n import translator
from orchestrator.web.portal import PortalRoute
from orchestrator.web.rendering import render, request_language

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

PAGE_SIZE = 25
_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")


def format_size(size: int) -> str:
    """Bytes for people: 1536 → "1.5 KB" (powers of 1024, one decimal from KB up)."""
    value = float(max(size, 0))
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@router.get("/catalogue")
def catalogue_page(
    request: Request,
    session: SessionDep,
    principal: PagePrincipal,
    q: str = "",
    offset: int = 0,
) -> Response:
    if principal is None:
        raise AuthFailed("Please log in.")
    policy.authorize(principal.user, Action.CATALOGUE_READ)
    offset = max(0, offset)
    query = q.strip()[:100]
    items, total = catalogue.list_datasets(
        session, query=query or None, limit=PAGE_SIZE, offset=offset
    )
    _ = translator(request_language(request))
    context = {
        "title": _("Dataset catalogue"),
        "nav": "catalogue",
        "items": items,
        "total": total,
        "q": query,
        "pager_query": urlencode({"q": query}) + "&" if query else "",
        "offset": offset,
        "page_size": PAGE_SIZE,
        "size": format_size,
    }
    return render(request, "projects/catalogue.html", context, principal=principal)
