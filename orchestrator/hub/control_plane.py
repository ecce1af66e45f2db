"""The hub's HTTP client of the control plane (service token): redeem a launch ticket, fetch the
spawn spec of a (user, project) server, ask whether a user's hub login may go on. Nothing here
reads Kluis's database: the control plane decides, the hub asks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx


class ControlPlaneRefused(Exception):
    """The control plane said no (4xx); `message` is safe to show to the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ControlPlane:
    url: str  # e.g. http://127.0.0.1:8000
    token: str  # KLUIS_HUB_SERVICE_TOKEN
    timeout: float = 10.0

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=self.timeout) as client:
            response = await client.request(
                method, path, json=body, headers={"Authorization": f"Bearer {self.token}"}
            )
        if 400 <= response.status_code < 500:
            raise ControlPlaneRefused(response.status_code, _message(response))
        response.raise_for_status()
        return response.json()

    async def redeem(self, ticket: str, project: str, username: str | None) -> str:
        """The username the ticket logs in; `ControlPlaneRefused` when it is not valid."""
        body: dict[str, Any] = {"ticket": ticket, "project": project}
        if username is not None:
            body["username"] = username
        answer = await self._call("POST", "/api/hub/tickets/redeem", body)
        return str(answer["username"])

    async def spawn_spec(
        self, username: str, project: str, options: dict[str, Any]
    ) -> dict[str, Any]:
        body = {"username": username, "project": project, "options": options}
        spec: dict[str, Any] = await self._call("POST", "/api/hub/spawn-spec", body)
        return spec

    async def user_allowed(self, username: str) -> bool:
        answer = await self._call("GET", f"/api/hub/users/{quote(username, safe='')}")
        return bool(answer["allowed"])


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"The control plane answered {response.status_code}."
