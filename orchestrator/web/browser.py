"""What the portal trusts from the browser and keeps there: CSRF tokens, redirect targets, cookies.

Two kinds of CSRF token. Forms shown before anyone is logged in (login, activation) use a signed
double-submit token: a random nonce in a `__Host-` cookie and, in the form, an HMAC of that nonce
under the secret key, so a forged form cannot carry a matching pair. Forms of a logged-in user carry
the token bound to their server-side session (`sessions.csrf_token`): `api.deps` checks it for
every cookie-authenticated unsafe request, and `require_form_principal` checks it once more, so
no portal form can forget to.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response
from starlette.datastructures import UploadFile

from orchestrator.api.deps import (
    CSRF_FORM_FIELD,
    OptionalPrincipal,
    Principal,
    SettingsDep,
    session_cookie_name,
)
from orchestrator.config import Settings
from orchestrator.errors import AuthFailed, Forbidden
from orchestrator.sessions import check_csrf

CSRF_FIELD = CSRF_FORM_FIELD
NEXT_FIELD = "next"
MAX_NEXT_LENGTH = 2000
_PRESESSION_LABEL = b"kluis.portal.presession-csrf\x00"


class PresessionTokenInvalid(Forbidden):
    """A pre-session form arrived without a valid token (forged, or the cookie expired)."""

    code = "csrf_failed"


def presession_cookie_name(settings: Settings) -> str:
    # `__Host-` pins the cookie to this exact origin (no Domain, path /, Secure): a sibling
    # subdomain cannot plant a nonce of its choosing. Browsers refuse the prefix without Secure.
    return "__Host-kluis_csrf" if settings.cookie_secure else "kluis_csrf"


def new_presession_nonce() -> str:
    return secrets.token_urlsafe(32)


def sign_presession_nonce(settings: Settings, nonce: str) -> str:
    """The form half of the double-submit pair: HMAC-SHA256 of the cookie's nonce."""
    key = settings.effective_secret_key.encode()
    return hmac.new(key, _PRESESSION_LABEL + nonce.encode(), hashlib.sha256).hexdigest()


def presession_token_ok(settings: Settings, nonce: str | None, token: str) -> bool:
    if not nonce or not token:
        return False
    return hmac.compare_digest(sign_presession_nonce(settings, nonce), token)


def safe_next(value: str | None, default: str) -> str:
    """A redirect target on this origin, or `default`.

    Accepts only an absolute path: one leading `/`, never `//` or `/\\` (browsers read both as
    another host), no backslash or control character anywhere (browsers turn `\\` into `/` and drop
    tabs and newlines, which would make `/\\t/evil` into `//evil`), no scheme and no host.
    """
    if not value or len(value) > MAX_NEXT_LENGTH or not value.startswith("/"):
        return default
    if value.startswith("//") or "\\" in value:
        return default
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


async def form_text(request: Request, name: str) -> str:
    """A text field of the (already parsed and cached) form; empty when absent or a file."""
    value = (await request.form()).get(name)
    return value if isinstance(value, str) else ""


async def form_file(request: Request, name: str) -> UploadFile | None:
    value = (await request.form()).get(name)
    return value if isinstance(value, UploadFile) else None


async def require_presession_form(request: Request, settings: SettingsDep) -> None:
    """Dependency for forms posted before login: the cookie's nonce must match the signed field."""
    nonce = request.cookies.get(presession_cookie_name(settings))
    if not presession_token_ok(settings, nonce, await form_text(request, CSRF_FIELD)):
        raise PresessionTokenInvalid("This form has expired. Please try again.")


def page_principal(principal: OptionalPrincipal) -> Principal | None:
    """The logged-in user of a portal page: browser sessions only (an API token is no login)."""
    if principal is None or principal.session is None:
        return None
    return principal


async def require_form_principal(
    request: Request, settings: SettingsDep, principal: OptionalPrincipal
) -> Principal:
    """Dependency for every form a logged-in user posts: the session must be live and the form
    must carry that session's CSRF token. Without a session the portal sends them to log in."""
    if principal is None or principal.session is None:
        raise AuthFailed("Please log in.")
    check_csrf(settings, principal.session, await form_text(request, CSRF_FIELD))
    return principal


def set_session_cookie(response: Response, settings: Settings, secret: str) -> None:
    """The session cookie: HttpOnly (no script reads it), SameSite=Strict (no other site's page
    sends it), Secure with the `__Host-` name unless local http development; no expiry, so it
    ends with the browser, while the server enforces the idle and absolute timeouts."""
    response.set_cookie(
        session_cookie_name(settings),
        secret,
        httponly=True,
        secure=settings.cookie_secure,
        samesite="strict",
        path="/",
    )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        session_cookie_name(settings),
        path="/",
        secure=settings.cookie_secure,
        httponly=True,
        samesite="strict",
    )


PresessionForm = Annotated[None, Depends(require_presession_form)]
PagePrincipal = Annotated[Principal | None, Depends(page_principal)]
FormPrincipal = Annotated[Principal, Depends(require_form_principal)]
