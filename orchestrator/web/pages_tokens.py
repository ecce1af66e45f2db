"""Staff page for the token inventory: the list (by state), PSKC import, lending a token to an
account, and the loan's end (returned, lost, revoked, back in stock).

Imports carry a file, which the step-up prompt cannot carry again, so the import form asks for
the code itself whenever the session has not stepped up recently.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, File, Form, Request, Response, UploadFile

from orchestrator import accounts, tokens
from orchestrator.api.deps import NowDep, SessionDep, SettingsDep, request_source
from orchestrator.config import Settings
from orchestrator.errors import Invalid, NotFound
from orchestrator.models import TokenState, UserSession
from orchestrator.policy import Action
from orchestrator.web.browser import FormPrincipal
from orchestrator.web.i18n import translator
from orchestrator.web.portal import PortalRoute
from orchestrator.web.rendering import reaches_all, redirect, render, request_language
from orchestrator.web.staff import StaffPrincipal, StepUpCode, authorize_page, confirm_change

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

PAGE_SIZE = 50
# The moves offered as buttons, in this order, for whichever the token's state allows.
MOVES = (TokenState.RETURNED, TokenState.LOST, TokenState.REVOKED, TokenState.IN_STOCK)
MOVE_LABELS = {
    TokenState.RETURNED: "Returned",
    TokenState.LOST: "Lost",
    TokenState.REVOKED: "Revoke",
    TokenState.IN_STOCK: "Back in stock",
}


def stepped_up_recently(
    user_session: UserSession | None, settings: Settings, now: datetime
) -> bool:
    if user_session is None or user_session.stepped_up_at is None:
        return False
    return now - user_session.stepped_up_at <= timedelta(minutes=settings.stepup_max_age_minutes)


@router.get("/admin/tokens")
def tokens_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: StaffPrincipal,
    now: NowDep,
    state: str = "",
    offset: int = 0,
) -> Response:
    authorize_page(principal, Action.TOKEN_READ)
    wanted = TokenState(state) if state in {s.value for s in TokenState} else None
    offset = max(0, offset)
    items, total = tokens.list_tokens(
        session, principal.user, state=wanted, limit=PAGE_SIZE, offset=offset
    )
    in_stock, _count = tokens.list_tokens(
        session, principal.user, state=TokenState.IN_STOCK, limit=100
    )
    _ = translator(request_language(request))
    context = {
        "title": _("Tokens"),
        "nav": "tokens",
        "items": items,
        "total": total,
        "state": wanted.value if wanted else "",
        "states": list(TokenState),
        "offset": offset,
        "page_size": PAGE_SIZE,
        "pager_query": urlencode({"state": wanted.value}) + "&" if wanted else "",
        "in_stock": in_stock,
        "moves": {item.id: [m for m in MOVES if tokens.can_move(item, m)] for item in items},
        "move_labels": MOVE_LABELS,
        "may_import": reaches_all(principal.user, Action.TOKEN_IMPORT),
        "may_assign": reaches_all(principal.user, Action.TOKEN_ASSIGN),
        "may_move": reaches_all(principal.user, Action.TOKEN_REVOKE),
        "needs_code": not stepped_up_recently(principal.session, settings, now),
    }
    return render(request, "admin_tokens.html", context, principal=principal)


@router.post("/admin/tokens/import")
def import_tokens(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    code: StepUpCode,
    pskc: Annotated[UploadFile | None, File()] = None,
    psk: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    confirm_change(session, settings, principal, code, now, Action.TOKEN_IMPORT, sensitive=True)
    if pskc is None or not pskc.filename:
        raise Invalid("Choose a PSKC file to import.", {"field": "pskc"})
    data = pskc.file.read(tokens.MAX_PSKC_BYTES + 1)
    if len(data) > tokens.MAX_PSKC_BYTES:
        raise tokens.PayloadTooLarge(
            f"The file is larger than {tokens.MAX_PSKC_BYTES // (1024 * 1024)} MiB."
        )
    imported = tokens.import_pskc(
        session,
        settings,
        data,
        source=pskc.filename,
        psk_hex=psk.strip() or None,
        actor=principal.user,
        client=request_source(request, settings),
    )
    return redirect(f"/admin/tokens?done=imported&count={len(imported)}")


@router.post("/admin/tokens/assign")
def assign_token(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    code: StepUpCode,
    serial: Annotated[str, Form(max_length=64)] = "",
    username: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    token = tokens.find_token_by_serial(session, serial)
    if token is None:
        raise NotFound("Token not found.")
    confirm_change(
        session, settings, principal, code, now, Action.TOKEN_ASSIGN, token, sensitive=False
    )
    user = accounts.find_user_by_username(session, username)
    if user is None:
        raise NotFound("User not found.")
    tokens.assign_token(
        session,
        token,
        user,
        actor=principal.user,
        source=request_source(request, settings),
        now=now,
    )
    return redirect("/admin/tokens?done=saved")


@router.post("/admin/tokens/{token_id}/move")
def move_token(
    token_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    code: StepUpCode,
    to: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    token = tokens.get_token(session, token_id)
    revoking = to == TokenState.REVOKED
    confirm_change(
        session, settings, principal, code, now, Action.TOKEN_REVOKE, token, sensitive=revoking
    )
    source = request_source(request, settings)
    actor = principal.user
    if to == TokenState.RETURNED:
        tokens.return_token(session, token, actor=actor, source=source, now=now)
    elif to == TokenState.LOST:
        tokens.report_lost(session, token, actor=actor, source=source, now=now)
    elif to == TokenState.REVOKED:
        tokens.revoke_token(session, token, actor=actor, source=source, now=now)
    elif to == TokenState.IN_STOCK:
        tokens.restock_token(session, token, actor=actor, source=source, now=now)
    else:
        raise Invalid("Choose one of the changes offered.", {"field": "to"})
    return redirect("/admin/tokens?done=saved")


@router.post("/admin/users/{user_id}/software-token")
def enrol_software_token(
    user_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    code: StepUpCode,
) -> Response:
    """A software token for an account without one; its QR code is shown here, once."""
    user = accounts.get_user(session, user_id)
    confirm_change(
        session, settings, principal, code, now, Action.TOKEN_ENROL, user, sensitive=True
    )
    enrolment = tokens.enrol_software_token(
        session,
        settings,
        user,
        actor=principal.user,
        source=request_source(request, settings),
        now=now,
    )
    _ = translator(request_language(request))
    # As an image, not inline SVG: the QR code's markup is not ours to vouch for under the CSP.
    qr = base64.b64encode(enrolment.qr_svg.encode()).decode("ascii")
    context = {
        "title": _("Software token"),
        "nav": "users",
        "account": user,
        "serial": enrolment.token.serial,
        "qr_data_uri": f"data:image/svg+xml;base64,{qr}",
        "uri": enrolment.provisioning_uri,
    }
    return render(request, "admin_enrolment.html", context, principal=principal)
