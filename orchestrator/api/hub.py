"""JupyterHub routes: a researcher's launch ticket (`POST /api/projects/{code}/launch`, browser
session only), and the hub's own endpoints under `/api/hub/` (service token only): redeem a
ticket, the spawn spec of a (user, project) server, whether a user's hub login may go on."""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from orchestrator import launch, projects
from orchestrator.api.access import allow
from orchestrator.api.deps import (
    CurrentPrincipal,
    NowDep,
    SessionDep,
    SettingsDep,
    request_source,
)
from orchestrator.errors import AuthFailed, Forbidden, NotFound
from orchestrator.policy import Action

router = APIRouter(tags=["hub"])

Code = Annotated[str, Path(pattern=r"^[0-9]{4,5}$", description="The project's code.")]
Username = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\s/]+$")]
ProjectCode = Annotated[str, Field(pattern=r"^[0-9]{4,5}$")]
HUB_ONLY: dict[int | str, dict[str, Any]] = {
    401: {"description": "No or a wrong hub service token."},
}


class LaunchRead(BaseModel):
    ticket: str = Field(description="Single use; valid until `expires_at`.")
    expires_at: datetime
    launch_url: str = Field(
        description="The hub's ticket login; send `project` and the ticket as `auth_ticket`."
    )
    url: str = Field(description="`launch_url` with the ticket and project as query parameters.")


class TicketRedeemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ticket: str = Field(max_length=200)
    project: ProjectCode
    username: Username | None = Field(
        default=None, description="The user already logged in to the hub, if any."
    )


class TicketRedeemRead(BaseModel):
    username: str
    project: str


class SpawnSpecCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Username
    project: ProjectCode
    options: dict[str, Any] = Field(default_factory=dict, description="The user's choices.")


class HubUserRead(BaseModel):
    username: str
    allowed: bool


async def require_hub(request: Request, settings: SettingsDep) -> None:
    """Only the hub, with `Authorization: Bearer <KLUIS_HUB_SERVICE_TOKEN>`; 401 otherwise
    (also when no token is configured: then nothing can call these routes)."""
    expected = settings.hub_service_token.get_secret_value()
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if (
        not expected
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(presented.strip().encode(), expected.encode())
    ):
        raise AuthFailed("This endpoint is for the hub only.")


HubOnly = Depends(require_hub)


@router.post(
    "/api/projects/{code}/launch",
    response_model=LaunchRead,
    status_code=201,
    responses={
        403: {"description": "Not allowed to open this workspace (the reason is given)."},
        404: {"description": "No such project (or not visible)."},
        409: {"description": "The workspace is not ready yet."},
    },
)
def create_launch(
    code: Code,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> LaunchRead:
    """A single-use launch ticket for the caller's server of this project (browser sessions
    only: the ticket logs a browser into the hub)."""
    project = projects.find_project_by_code(session, code)
    if project is None:
        raise NotFound("Project not found.")
    allow(principal, Action.PROJECT_READ, project)
    if principal.session is None:
        raise Forbidden("Workspaces are opened from a browser session, not with an API token.")
    issued = launch.issue_ticket(
        session,
        principal.user,
        project,
        settings,
        now,
        source=request_source(request, settings),
    )
    return LaunchRead(
        ticket=issued.secret,
        expires_at=issued.expires_at,
        launch_url=issued.launch_url,
        url=issued.url,
    )


@router.post(
    "/api/hub/tickets/redeem",
    response_model=TicketRedeemRead,
    dependencies=[HubOnly],
    responses={**HUB_ONLY, 403: {"description": "Invalid, used, expired or wrongly bound."}},
)
def redeem_ticket(body: TicketRedeemCreate, session: SessionDep, now: NowDep) -> TicketRedeemRead:
    """Use a launch ticket once (hub only): the user it logs in."""
    redeemed = launch.redeem_ticket(session, body.ticket, body.project, now, username=body.username)
    return TicketRedeemRead(username=redeemed.username, project=redeemed.project_code)


@router.post(
    "/api/hub/spawn-spec",
    dependencies=[HubOnly],
    responses={
        **HUB_ONLY,
        403: {"description": "The user may not run this server (the reason is given)."},
        404: {"description": "No such user or project."},
        409: {"description": "The workspace is not ready."},
        422: {"description": "Options outside the allow-list."},
    },
)
def create_spawn_spec(
    body: SpawnSpecCreate, session: SessionDep, settings: SettingsDep, now: NowDep
) -> dict[str, Any]:
    """The spawn spec of the user's server for the project (hub only)."""
    return launch.spawn_spec_for(session, body.username, body.project, settings, body.options, now)


@router.get(
    "/api/hub/users/{username}",
    response_model=HubUserRead,
    dependencies=[HubOnly],
    responses=HUB_ONLY,
)
async def read_hub_user(
    username: Annotated[str, Path(min_length=1, max_length=64)],
    session: SessionDep,
    now: NowDep,
) -> HubUserRead:
    """Whether the user's hub login may go on (hub only; asked on each refresh)."""
    allowed = await run_in_threadpool(launch.user_may_use_hub, session, username, now)
    return HubUserRead(username=username, allowed=allowed)
