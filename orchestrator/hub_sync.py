"""The hub sync: stop every hub server whose access has lapsed. One pass lists the hub's active
servers over its REST API (admin token), asks `launch.judge_server` about each (member removed,
account disabled or sessions revoked, project frozen or expired, grants changed since the
server started) and stops the rest; each stop is audited. Run every
`KLUIS_HUB_SYNC_INTERVAL_SECONDS` by `kluis hub sync` (and `kluis dev`): that interval bounds how
long a server outlives its access. The hub logs such users out on its own (`refresh_user`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import structlog
from sqlalchemy.orm import Session, sessionmaker

from orchestrator import audit, launch
from orchestrator.config import Settings
from orchestrator.db import session_scope
from orchestrator.errors import Unavailable
from orchestrator.models import utcnow

log = structlog.get_logger(__name__)
PAGE = 200


@dataclass
class SyncResult:
    kept: int = 0
    stopped: list[tuple[str, str, str]] = field(default_factory=list)  # user, server, reason


class HubApi:
    """The hub's REST API as the control plane's service (`KLUIS_HUB_API_TOKEN`)."""

    def __init__(self, settings: Settings, timeout: float = 10.0) -> None:
        token = settings.hub_api_token.get_secret_value()
        if not token:
            raise Unavailable("KLUIS_HUB_API_TOKEN is not set: cannot reach the hub's API.")
        self.client = httpx.Client(
            base_url=settings.hub_api_url.rstrip("/"),
            headers={"Authorization": f"token {token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self.client.close()

    def active_servers(self) -> list[tuple[str, str]]:
        """(username, server name) of every server that is running or starting."""
        found: list[tuple[str, str]] = []
        offset = 0
        while True:
            response = self.client.get(
                "/users", params={"state": "active", "offset": offset, "limit": PAGE}
            )
            response.raise_for_status()
            body: Any = response.json()
            users = body["items"] if isinstance(body, dict) else body
            for user in users:
                for name, server in (user.get("servers") or {}).items():
                    if server.get("ready") or server.get("pending") != "stop":
                        found.append((user["name"], name))
            if len(users) < PAGE:
                return found
            offset += PAGE

    def stop_server(self, username: str, server_name: str) -> None:
        path = f"/users/{quote(username, safe='')}/servers/{quote(server_name, safe='')}"
        response = self.client.delete(path)
        if response.status_code not in (202, 204, 404):
            response.raise_for_status()


def sync_once(
    factory: sessionmaker[Session], settings: Settings, hub: HubApi, now: datetime | None = None
) -> SyncResult:
    """One pass: every active server judged, the ones that may not run stopped (and audited)."""
    now = now or utcnow()
    result = SyncResult()
    for username, server_name in hub.active_servers():
        with factory() as session:
            verdict = launch.judge_server(session, username, server_name, settings, now)
        if verdict.keep:
            result.kept += 1
            continue
        hub.stop_server(username, server_name)
        result.stopped.append((username, server_name, verdict.reason))
        with session_scope(factory) as session:
            audit.record(
                session,
                "workspace_server_stopped",
                object_type="project",
                object_id=server_name,
                details={"user": username, "reason": verdict.reason},
            )
        log.info("hub_server_stopped", user=username, server=server_name, reason=verdict.reason)
    return result


def run_sync_loop(
    factory: sessionmaker[Session], settings: Settings, stop: threading.Event
) -> None:
    """`sync_once` every `hub_sync_interval_seconds` until `stop` is set; errors are logged and
    the next pass tries again (the hub may be restarting)."""
    hub = HubApi(settings)
    # httpx logs every request at INFO: one line per pass would drown the log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                result = sync_once(factory, settings, hub)
                if result.stopped:
                    log.info("hub_sync", kept=result.kept, stopped=len(result.stopped))
            except (httpx.HTTPError, Unavailable) as exc:
                log.warning("hub_sync_failed", error=str(exc))
            elapsed = time.monotonic() - started
            stop.wait(max(0.0, settings.hub_sync_interval_seconds - elapsed))
    finally:
        hub.close()
