"""What every staff page shares: who may open it, how a change is confirmed with a fresh code
(step-up), and the prompt that asks for that code.

A change needs the role (`policy.authorize`); a sensitive one also a step-up of at most
`stepup_max_age_minutes`. A form may carry the code itself (`stepup_code`); if it does not and the
session has not stepped up recently, `StepUpRequired` brings up the prompt, which posts the same
fields again with the code added, so nothing typed is lost. Forms with a file cannot be carried:
their prompt steps up on its own and returns to the page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request, Response
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from orchestrator import policy
from orchestrator.api.deps import Principal
from orchestrator.config import Settings
from orchestrator.errors import AuthFailed, Forbidden, KluisError
from orchestrator.policy import Action
from orchestrator.sessions import StepUpFailed, require_recent_step_up, step_up
from orchestrator.web.browser import CSRF_FIELD, PagePrincipal, form_text
from orchestrator.web.i18n import translator
from orchestrator.web.rendering import reaches_all, render, request_language

STEPUP_FIELD = "stepup_code"
MAX_CARRIED_FIELDS = 30
MAX_CARRIED_LENGTH = 4000
SECTIONS = frozenset({"admin", "projects", "review"})  # first path segments of `section`


def require_staff_page(principal: PagePrincipal) -> Principal:
    """The logged-in user of a staff page (any staff list needs a read that reaches everyone)."""
    if principal is None:
        raise AuthFailed("Please log in.")
    return principal


StaffPrincipal = Annotated[Principal, Depends(require_staff_page)]


def authorize_page(principal: Principal, action: Action) -> None:
    if not reaches_all(principal.user, action):
        raise Forbidden("You may not do this.")


async def read_stepup_code(request: Request) -> str:
    return (await form_text(request, STEPUP_FIELD)).strip()[:16]


StepUpCode = Annotated[str, Depends(read_stepup_code)]


def confirm_change(
    session: Session,
    settings: Settings,
    principal: Principal,
    code: str,
    now: datetime,
    action: Action,
    obj: object | None = None,
    *,
    sensitive: bool,
) -> None:
    """Allow a staff change or raise: the role first (403/404), then, for a sensitive change,
    the step-up (prompt). Sensitive are the changes the API also steps up for: status and role
    changes, password resets, token import, software enrolment and revocation."""
    policy.authorize(principal.user, action, obj)
    if code and principal.session is not None:
        step_up(session, principal.session, principal.user, code, settings, now)
    if sensitive:
        require_recent_step_up(principal.session, settings, now)


async def step_up_prompt(request: Request, exc: KluisError) -> Response:
    """The page asking for a fresh code, in answer to a change that needs one.

    Rendered from the error handler, after the request's transaction has ended: it uses only
    what the browser sent (the form was checked, CSRF token included, before the change ran).
    """
    _ = translator(request_language(request))
    form = await request.form()
    has_file = any(isinstance(value, UploadFile) for _name, value in form.multi_items())
    carried: list[tuple[str, str]] = []
    if has_file:
        action = "/stepup"
        carried = [(CSRF_FIELD, await form_text(request, CSRF_FIELD)), ("next", section(request))]
    else:
        action = request.url.path
        for name, value in form.multi_items()[:MAX_CARRIED_FIELDS]:
            if name != STEPUP_FIELD and isinstance(value, str):
                carried.append((name, value[:MAX_CARRIED_LENGTH]))
    context = {
        "title": _("Confirm with your token"),
        "action": action,
        "carried": carried,
        "error": _("The code was not accepted.") if isinstance(exc, StepUpFailed) else "",
    }
    return render(request, "stepup.html", context, status_code=exc.status_code)


def section(request: Request) -> str:
    """The page a form belongs to: `/admin/tokens/7/lost` → `/admin/tokens`, `/projects/1234/submit`
    → `/projects/1234`, `/review/requests/7/approve` → `/review/requests`."""
    parts = request.url.path.split("/")
    return "/".join(parts[:3]) if len(parts) >= 3 and parts[1] in SECTIONS else "/"
