"""Token routes under `/api/tokens`: the inventory, PSKC import (multipart upload), loans and their
ends, and software-token enrolment. Import, assignment, revocation and enrolment need step-up."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile

from orchestrator import accounts, tokens
from orchestrator.api.access import allow, require_step_up
from orchestrator.api.deps import CurrentPrincipal, NowDep, SessionDep, SettingsDep, request_source
from orchestrator.models import TokenKind, TokenState, TotpToken, User
from orchestrator.policy import Action
from orchestrator.schemas import (
    TokenAssignCreate,
    TokenEnrolmentCreate,
    TokenEnrolmentRead,
    TokenImportRead,
    TokenPage,
    TokenRead,
    TokenRevokeCreate,
)

router = APIRouter(prefix="/api/tokens", tags=["tokens"])

TokenId = Annotated[int, Path(ge=1, le=2_147_483_647)]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
STEP_UP: dict[int | str, dict[str, Any]] = {
    403: {"description": "Forbidden, or a recent step-up is needed."}
}
UPLOAD_CHUNK = 64 * 1024


def _token(session: SessionDep, principal: CurrentPrincipal, token_id: int) -> TotpToken:
    token = tokens.get_token(session, token_id)
    allow(principal, Action.TOKEN_READ, token)
    return token


def _visible_user(session: SessionDep, principal: CurrentPrincipal, user_id: int) -> User:
    user = accounts.get_user(session, user_id)
    allow(principal, Action.USER_READ, user)
    return user


@router.get("")
def list_tokens(
    principal: CurrentPrincipal,
    session: SessionDep,
    state: TokenState | None = None,
    kind: TokenKind | None = None,
    user_id: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> TokenPage:
    """The tokens the caller may see (a researcher: their own), by serial."""
    allow(principal, Action.TOKEN_READ)
    items, total = tokens.list_tokens(
        session,
        principal.user,
        state=state,
        kind=kind,
        user_id=user_id,
        limit=limit,
        offset=offset,
    )
    return TokenPage(
        items=[TokenRead.model_validate(t) for t in items], total=total, limit=limit, offset=offset
    )


@router.post(
    "/import",
    status_code=201,
    responses={
        **STEP_UP,
        409: {"description": "Serials already known or repeated; nothing imported."},
        413: {"description": "File too large."},
    },
)
def import_pskc(
    file: Annotated[UploadFile, File(description="A PSKC (RFC 6030) key container")],
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
    psk_hex: Annotated[str | None, Form(max_length=200)] = None,
) -> TokenImportRead:
    """Import every key of the file as a hardware token in stock, or none of them."""
    allow(principal, Action.TOKEN_IMPORT)
    require_step_up(principal, settings, now)
    data = _read_limited(file)
    imported = tokens.import_pskc(
        session,
        settings,
        data,
        source=file.filename or "upload.pskc",
        psk_hex=psk_hex,
        actor=principal.user,
        client=request_source(request, settings),
    )
    return TokenImportRead(imported=len(imported), serials=[t.serial for t in imported])


def _read_limited(file: UploadFile) -> bytes:
    """The upload, read in chunks and refused as soon as it passes the size limit."""
    chunks: list[bytes] = []
    size = 0
    while chunk := file.file.read(UPLOAD_CHUNK):
        size += len(chunk)
        if size > tokens.MAX_PSKC_BYTES:
            raise tokens.PayloadTooLarge(
                f"A PSKC file may have at most {tokens.MAX_PSKC_BYTES // 1024 // 1024} MiB."
            )
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/enrol",
    status_code=201,
    responses={**STEP_UP, 403: {"description": "Software tokens are switched off."}},
)
def enrol_software_token(
    body: TokenEnrolmentCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> TokenEnrolmentRead:
    """A software token on loan to the user; the answer (URI and QR code) is shown only once."""
    user = _visible_user(session, principal, body.user_id)
    allow(principal, Action.TOKEN_ENROL, user)
    require_step_up(principal, settings, now)
    enrolment = tokens.enrol_software_token(
        session,
        settings,
        user,
        actor=principal.user,
        source=request_source(request, settings),
        now=now,
    )
    return TokenEnrolmentRead(
        token=TokenRead.model_validate(enrolment.token),
        provisioning_uri=enrolment.provisioning_uri,
        qr_svg=enrolment.qr_svg,
    )


@router.get("/{token_id}")
def get_token(token_id: TokenId, principal: CurrentPrincipal, session: SessionDep) -> TokenRead:
    return TokenRead.model_validate(_token(session, principal, token_id))


@router.post("/{token_id}/assign", responses=STEP_UP)
def assign_token(
    token_id: TokenId,
    body: TokenAssignCreate,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> TokenRead:
    """Lend a token in stock to a user who has none on loan."""
    token = _token(session, principal, token_id)
    allow(principal, Action.TOKEN_ASSIGN, token)
    user = _visible_user(session, principal, body.user_id)
    require_step_up(principal, settings, now)
    tokens.assign_token(
        session,
        token,
        user,
        actor=principal.user,
        source=request_source(request, settings),
        now=now,
    )
    return TokenRead.model_validate(token)


@router.post("/{token_id}/return")
def return_token(
    token_id: TokenId,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> TokenRead:
    """The holder gave it back: their sessions end at once."""
    token = _token(session, principal, token_id)
    allow(principal, Action.TOKEN_REVOKE, token)
    tokens.return_token(
        session, token, actor=principal.user, source=request_source(request, settings), now=now
    )
    return TokenRead.model_validate(token)


@router.post("/{token_id}/lost")
def report_lost(
    token_id: TokenId,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> TokenRead:
    """The token is lost: the holder's sessions end at once."""
    token = _token(session, principal, token_id)
    allow(principal, Action.TOKEN_REVOKE, token)
    tokens.report_lost(
        session, token, actor=principal.user, source=request_source(request, settings), now=now
    )
    return TokenRead.model_validate(token)


@router.post("/{token_id}/revoke", responses=STEP_UP)
def revoke_token(
    token_id: TokenId,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
    body: TokenRevokeCreate | None = None,
) -> TokenRead:
    """The token may never be used again; a holder's sessions end at once."""
    token = _token(session, principal, token_id)
    allow(principal, Action.TOKEN_REVOKE, token)
    require_step_up(principal, settings, now)
    tokens.revoke_token(
        session,
        token,
        actor=principal.user,
        reason=body.reason if body is not None else "",
        source=request_source(request, settings),
        now=now,
    )
    return TokenRead.model_validate(token)


@router.post("/{token_id}/restock")
def restock_token(
    token_id: TokenId,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> TokenRead:
    """A returned hardware token was checked and may be lent again."""
    token = _token(session, principal, token_id)
    allow(principal, Action.TOKEN_REVOKE, token)
    tokens.restock_token(
        session, token, actor=principal.user, source=request_source(request, settings), now=now
    )
    return TokenRead.model_validate(token)
