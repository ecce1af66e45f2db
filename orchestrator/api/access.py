"""How API routes apply `policy` to the caller: role and object checks, API-token scopes, and
step-up for sensitive administration. Routes call these; the decisions themselves are policy's.
"""

from __future__ import annotations

from datetime import datetime

from orchestrator import policy, sessions
from orchestrator.api.deps import Principal
from orchestrator.config import Settings
from orchestrator.errors import Forbidden


def allow(principal: Principal, action: policy.Action, obj: object | None = None) -> None:
    """Raise unless the caller may do `action` (to `obj`): 404 for objects they may not see,
    403 for what their role (or, for an API token, its scopes) does not allow."""
    policy.authorize(principal.user, action, obj)
    if principal.api_token is not None:
        policy.authorize_scopes(principal.scopes, action)


def require_step_up(principal: Principal, settings: Settings, now: datetime) -> None:
    """Sensitive administration needs a fresh TOTP code on a browser session.

    An API token has no session to step up; it passes only with the "admin" scope, which only a
    data steward's token can carry (`policy.scopes_for_role`) and which is chosen when the token
    is created: automation that must do this is given it deliberately.
    """
    if principal.session is not None:
        sessions.require_recent_step_up(principal.session, settings, now)
        return
    if not principal.has_scope(policy.SCOPE_ADMIN):
        raise Forbidden("This action needs a browser session with a recent step-up.")
