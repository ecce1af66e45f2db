"""The application factory: `create_app(settings)` builds a ready-to-serve FastAPI app.

Nothing happens at import. The engine is made here (it connects lazily) and disposed on shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from orchestrator import __version__
from orchestrator.api import airlock as airlock_routes
from orchestrator.api import audit as audit_routes
from orchestrator.api import auth, health, institutions, tokens, users
from orchestrator.api import catalogue as catalogue_routes
from orchestrator.api import costs as cost_routes
from orchestrator.api import hub as hub_routes
from orchestrator.api import projects as project_routes
from orchestrator.api.handlers import install_error_handlers
from orchestrator.api.middleware import RequestContextMiddleware, security_headers
from orchestrator.config import Environment, Settings
from orchestrator.db import make_engine, make_sessionmaker
from orchestrator.web.portal import install_portal

OPENAPI_URL = "/api/openapi.json"
DOCS_URL = "/api/docs"
# Swagger UI loads its script and styles from a CDN; only the docs page may do so.
DOCS_CSP = (
    "default-src 'none'; script-src 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src https://cdn.jsdelivr.net; img-src data: https://fastapi.tiangolo.com; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def create_app(settings: Settings) -> FastAPI:
    engine = make_engine(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="Kluis",
        version=__version__,
        lifespan=lifespan,
        openapi_url=OPENAPI_URL,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.write_sessionmaker = make_sessionmaker(engine, write=True)
    # Domain code that needs settings inside a unit of work (e.g. notifications) finds them here.
    for factory in (app.state.sessionmaker, app.state.write_sessionmaker):
        factory.configure(info={"settings": settings})
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, headers=security_headers(settings))
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(institutions.router)
    app.include_router(users.router)
    app.include_router(tokens.router)
    app.include_router(audit_routes.router)
    app.include_router(catalogue_routes.router)
    app.include_router(project_routes.router)
    app.include_router(cost_routes.router)
    app.include_router(airlock_routes.router)
    app.include_router(hub_routes.router)
    if settings.environment is not Environment.PRODUCTION:
        # Not in production: third-party script on the API's origin is not worth the risk there.
        app.add_api_route(DOCS_URL, _swagger_ui, include_in_schema=False)
    install_portal(app, settings)
    return app


def _swagger_ui() -> HTMLResponse:
    page = get_swagger_ui_html(openapi_url=OPENAPI_URL, title="Kluis API")
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page
