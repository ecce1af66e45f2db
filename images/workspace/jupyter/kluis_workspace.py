"""Kluis's lockdown of the Jupyter server in a workspace: the routes that hand a file to the
browser as a download (raw files, the "open in a new tab" view, notebook export) answer 403.

Loaded as a server extension by the image's configuration (JUPYTER_CONFIG_DIR). Opening and
editing files in JupyterLab goes through the contents API and keeps working; so this removes the
download features, it is not a boundary on its own: what leaves a workspace leaves through an
output request.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

BLOCKED_ROUTES = ("files/.*", "view/.*", "nbconvert/.*")
MESSAGE = "Downloads are off in this workspace: results leave through an output request."


class DownloadsOff(JupyterHandler):  # type: ignore[misc]
    """Every method of a blocked route: 403, before authentication (nothing to learn from it)."""

    async def prepare(self, *args: Any, **kwargs: Any) -> None:
        raise web.HTTPError(403, MESSAGE)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "kluis_workspace"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    base_url = serverapp.web_app.settings["base_url"]
    handlers = [(url_path_join(base_url, route), DownloadsOff) for route in BLOCKED_ROUTES]
    # Tornado matches host rules added later before the server's own: these win.
    serverapp.web_app.add_handlers(".*$", handlers)
    serverapp.log.info("kluis_workspace: downloads off (%s)", ", ".join(BLOCKED_ROUTES))
