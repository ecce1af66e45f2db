"""Liveness, readiness and version: what probes and operators ask of a running control plane."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from orchestrator import __version__
from orchestrator.api.deps import EngineDep
from orchestrator.db import check_database
from orchestrator.errors import Unavailable

router = APIRouter(tags=["health"])


class HealthRead(BaseModel):
    status: str


class ReadinessRead(BaseModel):
    status: str
    database: str


class VersionRead(BaseModel):
    name: str
    version: str


@router.get("/healthz")
def healthz() -> HealthRead:
    """The process answers. Touches nothing else, so a slow database never kills the pod."""
    return HealthRead(status="ok")


@router.get("/readyz", responses={503: {"description": "Not ready; the reason is in details."}})
def readyz(engine: EngineDep) -> ReadinessRead:
    """Ready when the database answers and its schema is at the head of the shipped migrations."""
    database = check_database(engine)
    if not database.ready:
        raise Unavailable(f"not ready: {database.reason}", {"database": database.reason})
    return ReadinessRead(status="ready", database=database.reason)


@router.get("/version")
def version() -> VersionRead:
    return VersionRead(name="kluis", version=__version__)
