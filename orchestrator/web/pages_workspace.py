"""A researcher's workspace page for one project: whether they may open it (and why not), the
state of their server in the hub (starting, running, stopping, stopped), and the buttons to open
it (a launch ticket, then on to the hub) and to stop it.

The page's own texts carry their Dutch here (`TEXT`), beside the portal's catalogue. The page
allows its forms to go on to the hub's origin (CSP `form-action`), as the launch redirects there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session

from orchestrator import audit, hub_sync, launch
from orchestrator.api.deps import NowDep, SessionDep, SettingsDep, request_source
from orchestrator.config import Settings
from orchestrator.errors import Unavailable
from orchestrator.models import Project, User
from orchestrator.web.browser import FormPrincipal, PagePrincipal
from orchestrator.web.pages_projects import require_page_principal, visible_project
from orchestrator.web.portal import PortalRoute
from orchestrator.web.rendering import PORTAL_CSP, redirect, render, request_language

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

TEXT: Mapping[str, Mapping[str, str]] = {
    "title": {"en": "Workspace of project %(code)s", "nl": "Werkomgeving van project %(code)s"},
    "open": {"en": "Open workspace", "nl": "Werkomgeving openen"},
    "stop": {"en": "Stop workspace", "nl": "Werkomgeving stoppen"},
    "back": {"en": "Back to the project", "nl": "Terug naar het project"},
    "state": {"en": "State", "nl": "Status"},
    "not_allowed": {
        "en": "You cannot open this workspace: %(reason)s.",
        "nl": "U kunt deze werkomgeving niet openen: %(reason)s.",
    },
    "not_ready": {
        "en": "The workspace is not ready yet: %(reason)s. Try again in a minute.",
        "nl": "De werkomgeving is nog niet klaar: %(reason)s. Probeer het over een minuut opnieuw.",
    },
    "stopped": {"en": "Not running", "nl": "Niet actief"},
    "starting": {"en": "Starting", "nl": "Wordt gestart"},
    "running": {"en": "Running", "nl": "Actief"},
    "stopping": {"en": "Stopping", "nl": "Wordt gestopt"},
    "unknown": {
        "en": "Unknown (the hub does not answer)",
        "nl": "Onbekend (de hub antwoordt niet)",
    },
    "hint": {
        "en": "Your server runs in the project's own isolated environment with the project's "
        "data. It stops when it has been idle for a while, or when your access ends.",
        "nl": "Uw server draait in de eigen afgeschermde omgeving van het project, met de data "
        "van het project. Hij stopt als hij een tijd niet gebruikt is, of als uw toegang eindigt.",
    },
    "stop_requested": {"en": "The workspace is stopping.", "nl": "De werkomgeving wordt gestopt."},
    "busy": {
        "en": "Too many workspaces are starting right now, so yours was not started. "
        "Try again shortly.",
        "nl": "Er worden nu te veel werkomgevingen tegelijk gestart, daarom is de uwe niet "
        "gestart. Probeer het zo opnieuw.",
    },
}


def texts(language: str, **values: Any) -> dict[str, str]:
    return {
        key: (by[language] if language in by else by["en"]) % values for key, by in TEXT.items()
    }


@dataclass(frozen=True)
class ServerState:
    key: str  # stopped | starting | running | stopping | unknown
    url: str | None = None


def server_state(settings: Settings, username: str, code: str) -> ServerState:
    """The user's server for the project as the hub sees it (its REST API, admin token)."""
    try:
        hub = hub_sync.HubApi(settings, timeout=3.0)
    except Unavailable:
        return ServerState("unknown")
    try:
        response = hub.client.get(f"/users/{quote(username, safe='')}")
        if response.status_code == 404:
            return ServerState("stopped")
        response.raise_for_status()
        server = (response.json().get("servers") or {}).get(code)
    except (httpx.HTTPError, ValueError):
        return ServerState("unknown")
    finally:
        hub.close()
    if not server:
        return ServerState("stopped")
    if server.get("pending") == "stop":
        return ServerState("stopping")
    if server.get("ready"):
        return ServerState("running", f"{settings.hub_public_url}{server.get('url', '')}")
    return ServerState("starting")


def _hub_origin(settings: Settings) -> str:
    parts = urlsplit(settings.hub_public_url)
    return f"{parts.scheme}://{parts.netloc}"


def _page(
    request: Request,
    session: Session,
    settings: Settings,
    user: User,
    project: Project,
    now: Any,
    principal: Any,
    *,
    stopping: bool = False,
    busy: bool = False,
) -> Response:
    language = request_language(request)
    problem = launch.launch_problem(session, user, project, now)
    not_ready = None if problem else launch.workspace_problem(session, project)
    t = texts(language, code=project.code, reason=problem or not_ready or "")
    state = (
        server_state(settings, user.username, project.code) if problem is None else ServerState("")
    )
    context = {
        "title": t["title"],
        "nav": "projects",
        "project": project,
        "t": t,
        "problem": problem,
        "not_ready": not_ready,
        "state": state,
        "state_text": t.get(state.key, ""),
        "stop_notice": t["stop_requested"] if stopping else None,
        # The hub sends people back here when its concurrent spawn limit is reached.
        "busy_notice": t["busy"] if busy and problem is None else None,
    }
    response = render(request, "projects/workspace.html", context, principal=principal)
    # The launch form's answer redirects to the hub: allow that origin as a form target here.
    response.headers["Content-Security-Policy"] = PORTAL_CSP.replace(
        "form-action 'self'", f"form-action 'self' {_hub_origin(settings)}"
    )
    return response


@router.get("/projects/{code}/workspace")
def workspace_page(
    code: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PagePrincipal,
    now: NowDep,
) -> Response:
    principal = require_page_principal(principal)
    project = visible_project(session, principal.user, code)
    stopping = "stopping" in request.query_params
    busy = "busy" in request.query_params
    return _page(
        request,
        session,
        settings,
        principal.user,
        project,
        now,
        principal,
        stopping=stopping,
        busy=busy,
    )


@router.post("/projects/{code}/workspace/open")
def open_workspace(
    code: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
    now: NowDep,
) -> Response:
    """A launch ticket, then on to the hub (303), which logs the user in and starts the server.
    Refusals (not a member, project frozen, workspace not ready) are the portal's error pages."""
    project = visible_project(session, principal.user, code)
    issued = launch.issue_ticket(
        session, principal.user, project, settings, now, source=request_source(request, settings)
    )
    return redirect(issued.url)


@router.post("/projects/{code}/workspace/stop")
def stop_workspace(
    code: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: FormPrincipal,
) -> Response:
    """Ask the hub to stop the user's own server for this project (audited)."""
    project = visible_project(session, principal.user, code)
    hub = hub_sync.HubApi(settings, timeout=5.0)
    try:
        hub.stop_server(principal.user.username, project.code)
    except httpx.HTTPError as exc:
        raise Unavailable("The hub does not answer; try again in a minute.") from exc
    finally:
        hub.close()
    audit.record(
        session,
        "workspace_server_stop_requested",
        actor=principal.user,
        object_type="project",
        object_id=project.code,
        source=request_source(request, settings),
    )
    return redirect(f"/projects/{project.code}/workspace?stopping=1")
