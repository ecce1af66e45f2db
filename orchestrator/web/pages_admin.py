"""Staff pages for institutions and accounts: lists, creating (an account's activation link is
shown once, on the page that answers the form), and changes (an institution's authorisation and
networks; an account's status, statement, new link).

Every change goes through `staff.confirm_change` (role, then step-up) and redirects back with a
notice; failures of the domain rules (`Invalid`, `Conflict`) come back as an error page.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request, Response

from orchestrator import accounts, institutions
from orchestrator.api.deps import NowDep, Principal, SessionDep, SettingsDep, request_source
from orchestrator.config import Settings
from orchestrator.errors import Invalid
from orchestrator.models import Role, User, UserStatus
from orchestrator.policy import Action
from orchestrator.web.browser import FormPrincipal
from orchestrator.web.i18n import translator
from orchestrator.web.portal import PortalRoute
from orchestrator.web.rendering import reaches_all, redirect, render, request_language
from orchestrator.web.staff import StaffPrincipal, StepUpCode, authorize_page, confirm_change

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

PAGE_SIZE = 50
# Staff may create these roles here; ops accounts come only from the command line (policy).
CREATABLE_ROLES = (Role.RESEARCHER, Role.DATA_STEWARD, Role.OUTPUT_CHECKER)
STATUS_CHOICES = (UserStatus.ACTIVE, UserStatus.SUSPENDED, UserStatus.CLOSED)

Text = Annotated[str, Form(max_length=1024)]
Day = Annotated[str, Form(max_length=10)]


def parse_day(value: str, field: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise Invalid(f"{field}: a date such as 2026-01-31 is needed.", {"field": field}) from None


# --- institutions ---------------------------------------------------------------------------------


@router.get("/admin/institutions")
def institutions_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: StaffPrincipal,
    now: NowDep,
) -> Response:
    authorize_page(principal, Action.INSTITUTION_READ)
    items, total = institutions.list_institutions(session, principal.user, limit=500)
    _ = translator(request_language(request))
    context = {
        "title": _("Institutions"),
        "nav": "institutions",
        "items": items,
        "total": total,
        "today": now.date(),
        "countries": sorted(settings.adequate_countries),
        "max_years": settings.max_authorisation_years,
        "may_manage": reaches_all(principal.user, Action.INSTITUTION_MANAGE),
    }
    return render(request, "admin_institutions.html", context, principal=principal)


@router.post("/admin/institutions")
def create_institution(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    code: StepUpCode,
    name: Text = "",
    country: Annotated[str, Form(max_length=8)] = "",
    authorised_from: Day = "",
    authorised_until: Day = "",
    allowed_networks: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    confirm_change(
        session, settings, principal, code, now, Action.INSTITUTION_MANAGE, sensitive=False
    )
    institutions.create_institution(
        session,
        settings,
        name=name,
        country=country,
        authorised_from=parse_day(authorised_from, "authorised_from"),
        authorised_until=parse_day(authorised_until, "authorised_until"),
        allowed_networks=[line for line in allowed_networks.splitlines() if line.strip()],
        actor=principal.user,
        source=request_source(request, settings),
    )
    return redirect("/admin/institutions?done=saved")


@router.get("/admin/institutions/{institution_id}")
def institution_page(
    institution_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: StaffPrincipal,
) -> Response:
    authorize_page(principal, Action.INSTITUTION_MANAGE)
    institution = institutions.get_institution(session, institution_id)
    _ = translator(request_language(request))
    context = {
        "title": institution.name,
        "nav": "institutions",
        "item": institution,
        "countries": sorted(settings.adequate_countries),
        "max_years": settings.max_authorisation_years,
    }
    return render(request, "admin_institution.html", context, principal=principal)


@router.post("/admin/institutions/{institution_id}")
def update_institution(
    institution_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    code: StepUpCode,
    version: Annotated[int, Form()],
    name: Text = "",
    country: Annotated[str, Form(max_length=8)] = "",
    authorised_from: Day = "",
    authorised_until: Day = "",
    allowed_networks: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    """Optimistic locking: the form carries the version it showed; a concurrent edit is a 409."""
    institution = institutions.get_institution(session, institution_id)
    confirm_change(
        session,
        settings,
        principal,
        code,
        now,
        Action.INSTITUTION_MANAGE,
        institution,
        sensitive=False,
    )
    institutions.update_institution(
        session,
        settings,
        institution,
        version=version,
        actor=principal.user,
        source=request_source(request, settings),
        name=name,
        country=country,
        authorised_from=parse_day(authorised_from, "authorised_from"),
        authorised_until=parse_day(authorised_until, "authorised_until"),
        allowed_networks=[line for line in allowed_networks.splitlines() if line.strip()],
    )
    return redirect("/admin/institutions?done=saved")


# --- accounts -------------------------------------------------------------------------------------


@router.get("/admin/users")
def users_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: StaffPrincipal,
    q: str = "",
    offset: int = 0,
) -> Response:
    authorize_page(principal, Action.USER_READ)
    offset = max(0, offset)
    items, total = accounts.list_users(
        session, principal.user, query=q[:100] or None, limit=PAGE_SIZE, offset=offset
    )
    loans = {
        user.id: token.serial
        for user in items
        if (token := accounts.token_on_loan(session, user)) is not None
    }
    choices, _count = institutions.list_institutions(session, principal.user, limit=500)
    _ = translator(request_language(request))
    context = {
        "title": _("Accounts"),
        "nav": "users",
        "items": items,
        "loans": loans,
        "total": total,
        "q": q[:100],
        "pager_query": urlencode({"q": q[:100]}) + "&" if q else "",
        "offset": offset,
        "page_size": PAGE_SIZE,
        "roles": CREATABLE_ROLES,
        "institutions": choices,
        "may_create": reaches_all(principal.user, Action.USER_CREATE),
    }
    return render(request, "admin_users.html", context, principal=principal)


@router.post("/admin/users")
def create_user(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    code: StepUpCode,
    username: Text = "",
    full_name: Text = "",
    email: Text = "",
    role: Annotated[str, Form(max_length=32)] = "",
    institution_id: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    confirm_change(session, settings, principal, code, now, Action.USER_CREATE, sensitive=False)
    if role not in {choice.value for choice in CREATABLE_ROLES}:
        raise Invalid("Choose one of the roles offered.", {"field": "role"})
    user, secret = accounts.create_account(
        session,
        settings,
        username=username,
        email=email,
        full_name=full_name,
        role=Role(role),
        institution_id=int(institution_id) if institution_id.isdigit() else None,
        actor=principal.user,
        source=request_source(request, settings),
        now=now,
    )
    return _show_link(request, principal, settings, user, secret, now)


def _show_link(
    request: Request,
    principal: Principal,
    settings: Settings,
    user: User,
    secret: str,
    now: datetime,
) -> Response:
    """The one time the link is shown: in the answer to the form, never stored or redirected."""
    _ = translator(request_language(request))
    context = {
        "title": _("Activation link"),
        "nav": "users",
        "account": user,
        "link": accounts.activation_url(settings, secret),
        "until": now + timedelta(hours=settings.activation_link_hours),
    }
    return render(request, "admin_user_created.html", context, principal=principal)


@router.get("/admin/users/{user_id}")
def user_page(
    user_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: StaffPrincipal,
    now: NowDep,
) -> Response:
    authorize_page(principal, Action.USER_READ)
    user = accounts.get_user(session, user_id)
    _ = translator(request_language(request))
    context = {
        "title": user.username,
        "nav": "users",
        "account": user,
        "token": accounts.token_on_loan(session, user),
        "statement_valid": accounts.has_valid_statement(user, now.date()),
        "statuses": [status for status in STATUS_CHOICES if status is not user.status],
        "today": now.date(),
        "may_change": reaches_all(principal.user, Action.USER_DISABLE),
        "may_enrol": settings.software_tokens_enabled
        and reaches_all(principal.user, Action.TOKEN_ENROL),
    }
    return render(request, "admin_user.html", context, principal=principal)


@router.post("/admin/users/{user_id}/status")
def change_status(
    user_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    code: StepUpCode,
    status: Annotated[str, Form(max_length=32)] = "",
    reason: Annotated[str, Form(max_length=500)] = "",
    version: Annotated[int | None, Form()] = None,
) -> Response:
    user = accounts.get_user(session, user_id)
    confirm_change(
        session, settings, principal, code, now, Action.USER_DISABLE, user, sensitive=True
    )
    if status not in {choice.value for choice in STATUS_CHOICES}:
        raise Invalid("Choose one of the statuses offered.", {"field": "status"})
    accounts.set_status(
        session,
        user,
        UserStatus(status),
        actor=principal.user,
        reason=reason,
        source=request_source(request, settings),
        version=version,
        now=now,
    )
    return redirect(f"/admin/users/{user.id}?done=saved")


@router.post("/admin/users/{user_id}/statement")
def record_statement(
    user_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    code: StepUpCode,
    signed_on: Day = "",
    valid_until: Day = "",
) -> Response:
    user = accounts.get_user(session, user_id)
    confirm_change(
        session, settings, principal, code, now, Action.USER_STATEMENT, user, sensitive=False
    )
    signed = parse_day(signed_on, "signed_on")
    # A day, not a moment: noon UTC, or now when signed today, so it is never "in the future".
    signed_at = min(datetime.combine(signed, time(12), tzinfo=UTC), now)
    accounts.record_statement(
        session,
        user,
        signed_at=signed_at,
        valid_until=parse_day(valid_until, "valid_until") if valid_until.strip() else None,
        actor=principal.user,
        source=request_source(request, settings),
        now=now,
    )
    return redirect(f"/admin/users/{user.id}?done=saved")


@router.post("/admin/users/{user_id}/activation-link")
def new_activation_link(
    user_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
    code: StepUpCode,
) -> Response:
    """A pending account gets a fresh link; an active one a password reset (old password ends)."""
    user = accounts.get_user(session, user_id)
    confirm_change(
        session, settings, principal, code, now, Action.USER_RESET_PASSWORD, user, sensitive=True
    )
    source = request_source(request, settings)
    if user.status is UserStatus.PENDING:
        secret = accounts.issue_activation_link(
            session, settings, user, actor=principal.user, source=source, now=now
        )
    else:
        secret = accounts.reset_password(
            session, settings, user, actor=principal.user, source=source, now=now
        )
    return _show_link(request, principal, settings, user, secret, now)
