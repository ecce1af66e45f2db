"""API input and output shapes: `<Thing>Create`, `<Thing>Update`, `<Thing>Read`, one block per
area of the API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.models import Role

# --- authentication ------------------------------------------------------------------------------
# Limits are generous for real input and small enough that hostile input is refused before any
# work (a 422 in the common error shape); the domain applies the exact rules.


class LoginCreate(BaseModel):
    """Credentials for `POST /api/auth/login`."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)
    code: str = Field(min_length=1, max_length=16)


class MeRead(BaseModel):
    """The caller: their account and how they are authenticated."""

    id: int
    username: str
    full_name: str
    email: str
    role: Role
    institution_id: int | None
    statement_valid_until: date | None
    auth: str  # "session" or "api_token"
    scopes: list[str]
    session_id: int | None
    stepped_up_at: datetime | None


class LoginRead(BaseModel):
    user: MeRead
    csrf_token: str
    expires_at: datetime  # the absolute timeout; the idle timeout may end the session earlier


class UserSessionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    source: str
    user_agent: str
    current: bool = False


class LogoutRead(BaseModel):
    ended: int  # how many sessions were ended


class StepUpCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=16)


class StepUpRead(BaseModel):
    stepped_up_at: datetime
    valid_until: datetime


class ApiTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scopes: list[Annotated[str, Field(max_length=40)]] = Field(min_length=1, max_length=10)
    expires_in_days: int = Field(ge=1, le=3650)


class ApiTokenRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    prefix: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiTokenCreatedRead(ApiTokenRead):
    """Returned once, at creation: `token` is never shown again."""

    token: str


# --- end of authentication -----------------------------------------------------------------------
