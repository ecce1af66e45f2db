"""Logging in to the hub with a launch ticket: `/hub/kluis/login?project=P&auth_ticket=T`
redeems the ticket server-to-server with the control plane and logs its user in, with no second
form, then starts (or opens) that user's server named P. Any other way in (`/hub/login`) goes
to the portal.
"""

from __future__ import annotations

from typing import Any

from jupyterhub.auth import Authenticator
from jupyterhub.handlers import BaseHandler
from jupyterhub.utils import url_path_join
from tornado import web
from traitlets import Unicode, default

from orchestrator.hub.control_plane import ControlPlane, ControlPlaneRefused

PROJECT_CODE_LENGTHS = (4, 5)
# "auth" in the name: JupyterHub's request log shows the value as [secret].
TICKET_PARAM = "auth_ticket"


def valid_project_code(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) in PROJECT_CODE_LENGTHS


class PortalRedirectHandler(BaseHandler):  # type: ignore[misc]
    """The hub's login page: there is none, the portal is where people log in."""

    async def get(self) -> None:
        self.redirect(self.authenticator.portal_url)


class TicketLoginHandler(BaseHandler):  # type: ignore[misc]
    async def get(self) -> None:
        ticket = self.get_argument(TICKET_PARAM, "")
        project = self.get_argument("project", "")
        if not ticket or not valid_project_code(project):
            self.redirect(self.authenticator.portal_url)
            return
        current = self.current_user
        data = {
            "ticket": ticket,
            "project": project,
            "current": current.name if current is not None else None,
        }
        user = await self.login_user(data)
        if user is None:
            raise web.HTTPError(
                403,
                "This launch link is invalid, used or expired. "
                "Open the workspace again from the portal.",
            )
        if self._spawn_throttled(user, project):
            # The hub would answer 429 (concurrent spawn limit): say so on the portal instead.
            self.redirect(f"{self.authenticator.portal_url}projects/{project}/workspace?busy=1")
            return
        self.redirect(url_path_join(self.hub.base_url, "spawn", user.name, project))

    def _spawn_throttled(self, user: Any, project: str) -> bool:
        """Whether starting this server now would be refused by JupyterHub's own check (spawns
        pending >= `concurrent_spawn_limit`). A server already running or starting is not a new
        spawn. The hub's check at the spawn itself stays the authority (its 429 page)."""
        limit = self.concurrent_spawn_limit
        if not limit:
            return False
        spawner = user.spawners.get(project)  # dict.get: does not create a spawner
        if spawner is not None and (spawner.active or spawner.pending):
            return False
        counts = self.users.count_active_users()
        return bool(counts["spawn_pending"] + counts["proxy_pending"] >= limit)


class KluisAuthenticator(Authenticator):  # type: ignore[misc]
    """Who may log in is the control plane's decision, made when it issued the ticket (and again
    when the ticket is redeemed); the hub keeps no list of its own."""

    control_plane_url = Unicode("http://127.0.0.1:8000", config=True, help="The control plane.")
    service_token = Unicode("", config=True, help="KLUIS_HUB_SERVICE_TOKEN.")
    portal_url = Unicode("http://127.0.0.1:8000/", config=True, help="Where to log in.")

    auto_login = True

    @default("allow_all")
    def _allow_all_default(self) -> bool:
        return True

    def _control_plane(self) -> ControlPlane:
        return ControlPlane(self.control_plane_url, self.service_token)

    def login_url(self, base_url: str) -> str:
        return str(url_path_join(base_url, "login"))

    def get_handlers(self, app: Any) -> list[tuple[str, type[BaseHandler]]]:
        return [("/login", PortalRedirectHandler), ("/kluis/login", TicketLoginHandler)]

    async def authenticate(self, handler: Any, data: dict[str, Any]) -> dict[str, Any] | None:
        try:
            username = await self._control_plane().redeem(
                str(data["ticket"]), str(data["project"]), data.get("current")
            )
        except ControlPlaneRefused as refused:
            self.log.warning("launch ticket refused: %s", refused.message)
            return None
        return {"name": username}

    async def refresh_user(self, user: Any, handler: Any = None) -> bool:
        """False (log in again, i.e. go to the portal) once the control plane says the user's
        hub login may not go on: account disabled, sessions revoked, statement lapsed."""
        try:
            return await self._control_plane().user_allowed(user.name)
        except ControlPlaneRefused:
            return False
