"""API input and output shapes: `<Thing>Create`, `<Thing>Update`, `<Thing>Read`, one block per
area of the API."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from orchestrator.models import (
    ChargeKind,
    MemberRole,
    ProjectState,
    RequestKind,
    RequestState,
    Role,
    TokenKind,
    TokenState,
    UserStatus,
)

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


# --- administration ------------------------------------------------------------------------------
# Institutions, accounts, tokens and the audit trail. Field limits refuse hostile sizes early (422
# in the common error shape); the domain modules apply the exact rules with messages that say why.

DatabaseId = Annotated[int, Field(ge=1, le=2_147_483_647)]
Reason = Annotated[str, Field(max_length=500)]


class InstitutionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    country: str = Field(min_length=1, max_length=8)
    authorised_from: date
    authorised_until: date
    allowed_networks: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=50
    )


class InstitutionUpdate(BaseModel):
    """Only the fields given change. `version` is the version last read (optimistic locking)."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2_147_483_647)
    name: str | None = Field(default=None, min_length=1, max_length=200)
    country: str | None = Field(default=None, min_length=1, max_length=8)
    authorised_from: date | None = None
    authorised_until: date | None = None
    allowed_networks: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, max_length=50
    )


class InstitutionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    country: str
    authorised_from: date
    authorised_until: date
    allowed_networks: list[str]
    created_at: datetime
    updated_at: datetime
    version: int


class InstitutionPage(BaseModel):
    items: list[InstitutionRead]
    total: int
    limit: int
    offset: int


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=256)
    email: str = Field(min_length=1, max_length=320)
    full_name: str = Field(min_length=1, max_length=400)
    role: Role
    institution_id: DatabaseId | None = None


class UserUpdate(BaseModel):
    """Only the fields given change. Role and status changes need a recent step-up; `reason` is
    required to suspend or close. `version` (optional) is the version last read."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(default=None, ge=1, le=2_147_483_647)
    full_name: str | None = Field(default=None, min_length=1, max_length=400)
    email: str | None = Field(default=None, min_length=1, max_length=320)
    institution_id: DatabaseId | None = None
    role: Role | None = None
    status: UserStatus | None = None
    reason: Reason | None = None


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    email: str
    full_name: str
    role: Role
    status: UserStatus
    institution_id: int | None
    statement_signed_at: datetime | None
    statement_valid_until: date | None
    created_at: datetime
    status_changed_at: datetime | None
    version: int


class UserPage(BaseModel):
    items: list[UserRead]
    total: int
    limit: int
    offset: int


class ActivationLinkRead(BaseModel):
    """Shown once: the link holds a secret that is stored only as a hash."""

    activation_url: str
    expires_at: datetime


class UserCreatedRead(BaseModel):
    user: UserRead
    activation: ActivationLinkRead


class ActivationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)


class StatementCreate(BaseModel):
    """A signed confidentiality statement; `valid_until` defaults to one year after signing."""

    model_config = ConfigDict(extra="forbid")

    signed_at: AwareDatetime
    valid_until: date | None = None


class TokenRead(BaseModel):
    """A token without its seed (the seed never leaves the server after import)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    serial: str
    kind: TokenKind
    algorithm: str
    digits: int
    period: int
    state: TokenState
    user_id: int | None
    source: str
    imported_at: datetime
    loaned_at: datetime | None
    returned_at: datetime | None
    lost_at: datetime | None
    revoked_at: datetime | None


class TokenPage(BaseModel):
    items: list[TokenRead]
    total: int
    limit: int
    offset: int


class TokenImportRead(BaseModel):
    imported: int
    serials: list[str]


class TokenAssignCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: DatabaseId


class TokenRevokeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason = ""


class TokenEnrolmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: DatabaseId


class TokenEnrolmentRead(BaseModel):
    """Shown once: the URI and QR code carry the seed."""

    token: TokenRead
    provisioning_uri: str
    qr_svg: str


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    at: datetime
    actor_id: int | None
    actor: str
    action: str
    object_type: str
    object_id: str
    source: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditEventRead]
    total: int
    limit: int
    offset: int


class AuditVerifyRead(BaseModel):
    ok: bool
    checked: int
    first_broken_seq: int | None
    reason: str


# --- end of administration -----------------------------------------------------------------------


# --- catalogue -----------------------------------------------------------------------------------
# Datasets and their versions: metadata only, never data. Storage locations and file lists are for
# staff (docs/security.md, "Dataset catalogue"); researchers get `null` there. Field limits refuse
# hostile sizes early; `catalogue.py` applies the exact rules with messages that say why.


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=64)
    title: str = Field(min_length=1, max_length=400)
    topic: str = Field(min_length=1, max_length=160)
    description: str = Field(default="", max_length=20_000)


class DatasetUpdate(BaseModel):
    """Only the fields given change; the code never does. `version` is the version last read
    (optimistic locking)."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2_147_483_647)
    title: str | None = Field(default=None, min_length=1, max_length=400)
    topic: str | None = Field(default=None, min_length=1, max_length=160)
    description: str | None = Field(default=None, max_length=20_000)


class DatasetVersionCreate(BaseModel):
    """`location` is a folder relative to the microdata root, such as `persons/2024V1`."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=64)
    location: str = Field(min_length=1, max_length=800)
    available_from: date
    available_until: date | None = None


class DatasetFileRead(BaseModel):
    path: str
    size: int
    sha256: str


class DatasetVersionRead(BaseModel):
    id: int
    label: str
    size_bytes: int
    file_count: int
    scanned_at: datetime | None
    available_from: date
    available_until: date | None
    available: bool = Field(description="Whether it may be granted today.")
    created_at: datetime
    location: str | None = Field(default=None, description="Staff only.")
    files: list[DatasetFileRead] | None = Field(
        default=None, description="Staff only, on a single dataset or version."
    )


class DatasetRead(BaseModel):
    id: int
    code: str
    title: str
    topic: str
    description: str
    created_at: datetime
    updated_at: datetime
    version: int
    versions: list[DatasetVersionRead]


class DatasetPage(BaseModel):
    items: list[DatasetRead]
    total: int
    limit: int
    offset: int


# --- end of catalogue ----------------------------------------------------------------------------


# --- costs ---------------------------------------------------------------------------------------
# Tariffs, quotes, charges and invoice lines. Money is a Decimal (a string in JSON), never float.

Money = Annotated[Decimal, Field(ge=0, le=Decimal("9999999999.99"), decimal_places=2)]


class TariffCreate(BaseModel):
    """A new tariff version; tariffs are never edited (a project keeps the one it was quoted
    with)."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=40)
    valid_from: date
    currency: str = Field(default="EUR", min_length=3, max_length=3)
    base_fee: Money
    per_researcher_month: Money
    per_topic_month: Money
    fee_add_researcher: Money
    fee_add_dataset: Money
    fee_extension: Money


class TariffRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    label: str
    valid_from: date
    currency: str
    base_fee: Decimal
    per_researcher_month: Decimal
    per_topic_month: Decimal
    fee_add_researcher: Decimal
    fee_add_dataset: Decimal
    fee_extension: Decimal
    created_at: datetime


class QuoteLineRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal


class QuoteRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    tariff_label: str
    currency: str
    months: Decimal
    lines: list[QuoteLineRead]
    total: Decimal


class ChargeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: ChargeKind
    description: str
    amount: Decimal
    incurred_on: date
    change_request_id: int | None


class InvoiceLineRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: str
    description: str
    period_start: date
    period_end: date
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    currency: str


class ProjectCostsRead(BaseModel):
    """What the lead and staff see: the estimate with the current members and data, the quote
    the lead accepted, the one-off charges, and what is invoiced from activation to `as_of`."""

    project_code: str
    as_of: date
    tariff_label: str | None
    currency: str | None
    estimate: QuoteRead | None
    accepted_quote_total: Decimal | None
    quote_accepted_at: datetime | None
    charges: list[ChargeRead]
    invoiced: list[InvoiceLineRead]
    invoiced_total: Decimal


# --- end of costs --------------------------------------------------------------------------------


# --- projects ------------------------------------------------------------------------------------
# Applications, the state machine's steps, members, grants and change requests. Field limits refuse
# hostile sizes early; `projects.py` and `requests.py` apply the exact rules with messages that
# say why. State, dates of an approved project, grants and quotes are not fields anyone sends:
# they change only through the steps (`POST .../transitions/{action}`) and approved requests.

ProjectText = Annotated[str, Field(max_length=20_000)]


class ProjectCreate(BaseModel):
    """An application (a draft). A researcher applies as its lead: `lead_id` is theirs or left
    out, `code` left out (staff give codes, or one is generated)."""

    model_config = ConfigDict(extra="forbid")

    code: str | None = Field(default=None, min_length=4, max_length=5, pattern=r"^[0-9]+$")
    lead_id: DatabaseId | None = None
    title: str = Field(min_length=1, max_length=400)
    purpose: ProjectText = Field(min_length=1)
    compute_size: str = Field(min_length=1, max_length=40)
    start_date: date
    end_date: date
    legal_basis: ProjectText = ""
    expected_publications: ProjectText = ""
    dataset_version_ids: list[DatabaseId] = Field(default_factory=list, max_length=200)
    member_ids: list[DatabaseId] = Field(default_factory=list, max_length=100)


class ProjectUpdate(BaseModel):
    """Changes to a draft; only the fields given change. `version` is the version last read
    (optimistic locking). `member_ids` and `dataset_version_ids` replace the sets asked for."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2_147_483_647)
    title: str | None = Field(default=None, min_length=1, max_length=400)
    purpose: ProjectText | None = Field(default=None, min_length=1)
    compute_size: str | None = Field(default=None, min_length=1, max_length=40)
    start_date: date | None = None
    end_date: date | None = None
    legal_basis: ProjectText | None = None
    expected_publications: ProjectText | None = None
    dataset_version_ids: list[DatabaseId] | None = Field(default=None, max_length=200)
    member_ids: list[DatabaseId] | None = Field(default=None, max_length=100)


class ProjectTransitionCreate(BaseModel):
    """One step of the state machine. `version` is the version last read; `comment` is required
    to return, reject and freeze."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2_147_483_647)
    comment: str = Field(default="", max_length=4_000)


class ProjectQuoteLineRead(BaseModel):
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal


class ProjectQuoteRead(BaseModel):
    """The quote stored on the project (an estimate while a draft); only for those who may see
    the project's costs."""

    tariff_id: int | None
    lines: list[ProjectQuoteLineRead]
    total: Decimal | None
    quoted_at: datetime | None
    accepted_at: datetime | None


class ProjectRead(BaseModel):
    id: int
    code: str
    title: str
    purpose: str
    institution_id: int
    lead_id: int
    start_date: date
    end_date: date
    compute_size: str
    legal_basis: str
    expected_publications: str
    state: ProjectState
    state_changed_at: datetime
    review_comments: str
    requested_dataset_version_ids: list[int]
    approved_by_id: int | None
    approved_at: datetime | None
    activated_at: datetime | None
    expired_at: datetime | None
    archived_at: datetime | None
    deleted_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int
    actions: list[str] = Field(description="The steps the caller may take now.")
    quote: ProjectQuoteRead | None = Field(
        default=None, description="Only for the lead and staff who see costs."
    )


class ProjectPage(BaseModel):
    items: list[ProjectRead]
    total: int
    limit: int
    offset: int


class ProjectMemberRead(BaseModel):
    """One membership period; a member removed and added again has two."""

    id: int
    user_id: int
    username: str
    full_name: str
    role: MemberRole
    added_at: datetime
    removed_at: datetime | None


class ProjectGrantRead(BaseModel):
    id: int
    dataset_version_id: int
    dataset_code: str
    label: str
    granted_at: datetime
    revoked_at: datetime | None


class ProjectEventRead(BaseModel):
    """An audit event about the project (amounts left out for those who may not see costs)."""

    seq: int
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    details: dict[str, Any]


class ProjectEventPage(BaseModel):
    items: list[ProjectEventRead]
    total: int
    limit: int
    offset: int


class ChangeRequestCreate(BaseModel):
    """`user_id` for add_member/remove_member, `dataset_version_id` for add_dataset,
    `new_end_date` (and a `reason`) for extension."""

    model_config = ConfigDict(extra="forbid")

    kind: RequestKind
    user_id: DatabaseId | None = None
    dataset_version_id: DatabaseId | None = None
    new_end_date: date | None = None
    reason: str = Field(default="", max_length=4_000)


class ChangeRequestDecisionCreate(BaseModel):
    """Approve, reject (a comment is required) or withdraw; `version` is the version last read."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2_147_483_647)
    comment: str = Field(default="", max_length=4_000)


class ChangeRequestRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project_id: int
    project_code: str
    kind: RequestKind
    state: RequestState
    payload: dict[str, Any]
    reason: str
    requested_by_id: int
    requested_at: datetime
    decided_by_id: int | None
    decided_at: datetime | None
    decision_comment: str
    version: int


class ChangeRequestPage(BaseModel):
    items: list[ChangeRequestRead]
    total: int
    limit: int
    offset: int


# --- end of projects -----------------------------------------------------------------------------
