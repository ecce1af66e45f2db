"""Authorisation: the one place that decides who may do what to which object.

Three questions, answered here and nowhere else:

- **Which actions does a role have, and on whose objects?** `GRANTS` maps each role to its
  actions with a reach: `Reach.ANY` (every object of that kind) or `Reach.OWN` (the caller's own
  account, tokens and institution). `authorize` checks it; `can` answers without raising.
- **Which objects may a caller see at all?** `visible_users`, `visible_institutions`,
  `visible_tokens` and `visible_projects` narrow a `select` so lists never contain another
  person's objects; an object the caller may not see is reported as not found (404), never as
  forbidden, so its existence does not leak. A researcher's "own" projects are those they are or
  were a member of; `Reach.LEAD` narrows further to the projects they lead.
- **Which field changes escalate privilege?** `authorize_role_grant` and `authorize_status_change`
  hold the segregation rules: nobody changes their own role or status; `ops` accounts (platform
  administrators) are created, promoted, demoted, suspended and closed only from the command line.

Callers: API routes and the portal call `authorize` before acting; domain functions call the
field-level checks themselves, so the command line (`--as USERNAME`) gets the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Select, false, or_, select

from orchestrator.errors import Forbidden, NotFound
from orchestrator.models import (
    ChangeRequest,
    Institution,
    Project,
    ProjectMember,
    Role,
    TotpToken,
    User,
    UserStatus,
)

S = TypeVar("S", bound=Select[Any])


class Action(StrEnum):
    INSTITUTION_READ = "institution.read"
    INSTITUTION_MANAGE = "institution.manage"
    USER_READ = "user.read"
    USER_CREATE = "user.create"
    USER_UPDATE = "user.update"  # name, e-mail, institution
    USER_DISABLE = "user.disable"  # status: suspend, close, reactivate
    USER_ROLE_CHANGE = "user.role_change"
    USER_RESET_PASSWORD = "user.reset_password"  # noqa: S105 (an action name)
    USER_STATEMENT = "user.statement"  # record a signed confidentiality statement
    TOKEN_READ = "token.read"  # noqa: S105 (an action name)
    TOKEN_IMPORT = "token.import"  # noqa: S105 (an action name)
    TOKEN_ASSIGN = "token.assign"  # noqa: S105 (an action name)
    TOKEN_REVOKE = "token.revoke"  # noqa: S105 (also: returned, lost, back in stock)
    TOKEN_ENROL = "token.enrol"  # noqa: S105 (software token for a user)
    AUDIT_READ = "audit.read"
    AUDIT_EXPORT = "audit.export"
    SESSION_MANAGE_OWN = "session.manage_own"
    HEALTH_READ = "health.read"
    CATALOGUE_READ = "catalogue.read"  # metadata only, never data
    CATALOGUE_MANAGE = "catalogue.manage"
    # Projects: who may take which step of `projects.TRANSITIONS` is one of these per step.
    PROJECT_READ = "project.read"  # the project, its members, grants, requests and history
    PROJECT_APPLY = "project.apply"
    PROJECT_EDIT = "project.edit"  # change (or discard) a draft
    PROJECT_SUBMIT = "project.submit"
    PROJECT_ACCEPT = "project.accept"  # accept the quote: the lead's commitment to pay
    PROJECT_REVIEW = "project.review"  # return to draft with comments, or reject
    PROJECT_QUOTE = "project.quote"
    PROJECT_APPROVE = "project.approve"
    PROJECT_ACTIVATE = "project.activate"
    PROJECT_FREEZE = "project.freeze"  # also unfreeze
    PROJECT_CLOSE = "project.close"  # expire, archive
    PROJECT_DELETE = "project.delete"
    PROJECT_COSTS_READ = "project.costs_read"
    PROJECT_REQUEST_CHANGE = "project.request_change"  # also withdraw a pending request
    PROJECT_DECIDE_CHANGE = "project.decide_change"


class Reach(StrEnum):
    OWN = "own"  # own account, token, institution; projects one is or was a member of
    LEAD = "lead"  # projects one leads
    ANY = "any"


_SELF_SERVICE: dict[Action, Reach] = {
    Action.USER_READ: Reach.OWN,
    Action.INSTITUTION_READ: Reach.OWN,
    Action.TOKEN_READ: Reach.OWN,
    Action.SESSION_MANAGE_OWN: Reach.OWN,
    Action.CATALOGUE_READ: Reach.ANY,
}

GRANTS: Mapping[Role, Mapping[Action, Reach]] = {
    # A researcher sees their own account, token and institution, and the projects they are or
    # were a member of; as a project's lead they apply, edit the draft, submit, accept the quote,
    # see the costs and ask for changes. Nothing of anyone else.
    Role.RESEARCHER: {
        **_SELF_SERVICE,
        Action.PROJECT_READ: Reach.OWN,
        Action.PROJECT_APPLY: Reach.ANY,  # as the lead of the new project (checked in projects)
        Action.PROJECT_EDIT: Reach.LEAD,
        Action.PROJECT_SUBMIT: Reach.LEAD,
        Action.PROJECT_ACCEPT: Reach.LEAD,
        Action.PROJECT_COSTS_READ: Reach.LEAD,
        Action.PROJECT_REQUEST_CHANGE: Reach.LEAD,
    },
    # Output checkers review airlock requests (later issue): they see every project, not its costs.
    Role.OUTPUT_CHECKER: {**_SELF_SERVICE, Action.PROJECT_READ: Reach.ANY},
    # The data holder's administrators: institutions, accounts, tokens, and the audit trail.
    Role.DATA_STEWARD: {
        **_SELF_SERVICE,
        Action.INSTITUTION_READ: Reach.ANY,
        Action.INSTITUTION_MANAGE: Reach.ANY,
        Action.USER_READ: Reach.ANY,
        Action.USER_CREATE: Reach.ANY,
        Action.USER_UPDATE: Reach.ANY,
        Action.USER_DISABLE: Reach.ANY,
        Action.USER_ROLE_CHANGE: Reach.ANY,
        Action.USER_RESET_PASSWORD: Reach.ANY,
        Action.USER_STATEMENT: Reach.ANY,
        Action.TOKEN_READ: Reach.ANY,
        Action.TOKEN_IMPORT: Reach.ANY,
        Action.TOKEN_ASSIGN: Reach.ANY,
        Action.TOKEN_REVOKE: Reach.ANY,
        Action.TOKEN_ENROL: Reach.ANY,
        Action.AUDIT_READ: Reach.ANY,
        Action.AUDIT_EXPORT: Reach.ANY,
        Action.CATALOGUE_MANAGE: Reach.ANY,
        # Review, quote, approve, freeze, close and delete projects; decide change requests.
        # Accepting a quote and asking for changes stay with the lead.
        Action.PROJECT_READ: Reach.ANY,
        Action.PROJECT_APPLY: Reach.ANY,  # on a researcher's behalf, who becomes the lead
        Action.PROJECT_EDIT: Reach.ANY,
        Action.PROJECT_REVIEW: Reach.ANY,
        Action.PROJECT_QUOTE: Reach.ANY,
        Action.PROJECT_APPROVE: Reach.ANY,
        Action.PROJECT_ACTIVATE: Reach.ANY,
        Action.PROJECT_FREEZE: Reach.ANY,
        Action.PROJECT_CLOSE: Reach.ANY,
        Action.PROJECT_DELETE: Reach.ANY,
        Action.PROJECT_COSTS_READ: Reach.ANY,
        Action.PROJECT_DECIDE_CHANGE: Reach.ANY,
    },
    # The platform operators: read everything needed to run and investigate, change nothing here.
    Role.OPS: {
        **_SELF_SERVICE,
        Action.INSTITUTION_READ: Reach.ANY,
        Action.USER_READ: Reach.ANY,
        Action.TOKEN_READ: Reach.ANY,
        Action.AUDIT_READ: Reach.ANY,
        Action.AUDIT_EXPORT: Reach.ANY,
        Action.HEALTH_READ: Reach.ANY,
        Action.PROJECT_READ: Reach.ANY,
        Action.PROJECT_COSTS_READ: Reach.ANY,
    },
}

# --- API-token scopes -----------------------------------------------------------------------------

SCOPE_READ = "read"
SCOPE_PROJECTS_WRITE = "projects:write"
SCOPE_AIRLOCK_REVIEW = "airlock:review"
SCOPE_HUB = "hub"
SCOPE_ADMIN = "admin"
ALL_SCOPES = frozenset(
    {SCOPE_READ, SCOPE_PROJECTS_WRITE, SCOPE_AIRLOCK_REVIEW, SCOPE_HUB, SCOPE_ADMIN}
)

_ROLE_SCOPES: Mapping[Role, frozenset[str]] = {
    Role.RESEARCHER: frozenset({SCOPE_READ, SCOPE_PROJECTS_WRITE}),
    Role.OUTPUT_CHECKER: frozenset({SCOPE_READ, SCOPE_AIRLOCK_REVIEW}),
    Role.DATA_STEWARD: frozenset({SCOPE_READ, SCOPE_PROJECTS_WRITE, SCOPE_ADMIN}),
    Role.OPS: frozenset({SCOPE_READ, SCOPE_HUB}),
}

# Actions that only read; every other action changes state and needs the "admin" scope.
_READ_ACTIONS = frozenset(
    {
        Action.INSTITUTION_READ,
        Action.USER_READ,
        Action.TOKEN_READ,
        Action.AUDIT_READ,
        Action.AUDIT_EXPORT,
        Action.HEALTH_READ,
        Action.CATALOGUE_READ,
        Action.PROJECT_READ,
        Action.PROJECT_COSTS_READ,
    }
)
# Project work (applications, transitions, change requests) needs "projects:write"; staff steps
# that change access additionally need a step-up, which an API token passes only with "admin".
_PROJECT_WRITE_ACTIONS = frozenset(
    {
        Action.PROJECT_APPLY,
        Action.PROJECT_EDIT,
        Action.PROJECT_SUBMIT,
        Action.PROJECT_ACCEPT,
        Action.PROJECT_REVIEW,
        Action.PROJECT_QUOTE,
        Action.PROJECT_APPROVE,
        Action.PROJECT_ACTIVATE,
        Action.PROJECT_FREEZE,
        Action.PROJECT_CLOSE,
        Action.PROJECT_DELETE,
        Action.PROJECT_REQUEST_CHANGE,
        Action.PROJECT_DECIDE_CHANGE,
    }
)


def scopes_for_role(role: Role) -> frozenset[str]:
    """The scopes an API token of a user with this role may carry (never more than the role)."""
    return _ROLE_SCOPES[role]


def required_scope(action: Action) -> str:
    """The API-token scope an action needs: "read" for reads, "projects:write" for project work,
    "admin" for administration."""
    if action in _READ_ACTIONS:
        return SCOPE_READ
    if action in _PROJECT_WRITE_ACTIONS:
        return SCOPE_PROJECTS_WRITE
    return SCOPE_ADMIN


def authorize_scopes(scopes: frozenset[str] | set[str] | list[str], action: Action) -> None:
    """Raise `Forbidden` when an API token's scopes do not cover the action."""
    needed = required_scope(action)
    if needed not in scopes:
        raise Forbidden(f"This API token lacks the {needed!r} scope needed for {action}.")


# --- role and object checks -----------------------------------------------------------------------


def _reach(user: User, action: Action) -> Reach | None:
    if user.status is not UserStatus.ACTIVE:
        return None  # suspended, closed or not yet activated accounts may do nothing at all
    return GRANTS.get(user.role, {}).get(action)


def _owns(user: User, obj: object) -> bool:
    if isinstance(obj, User):
        return obj.id == user.id
    if isinstance(obj, TotpToken):
        return obj.user_id is not None and obj.user_id == user.id
    if isinstance(obj, Institution):
        return user.institution_id is not None and obj.id == user.institution_id
    if isinstance(obj, Project):
        return is_or_was_member(user, obj)
    if isinstance(obj, ChangeRequest):
        return is_or_was_member(user, obj.project)
    return False


def _leads(user: User, obj: object) -> bool:
    if isinstance(obj, ChangeRequest):
        obj = obj.project
    return isinstance(obj, Project) and obj.lead_id == user.id


def is_or_was_member(user: User, project: Project) -> bool:
    """Whether the user leads the project or has a membership row in it (current or ended)."""
    return project.lead_id == user.id or any(m.user_id == user.id for m in project.members)


_READ_OF: Mapping[type, Action] = {
    User: Action.USER_READ,
    TotpToken: Action.TOKEN_READ,
    Institution: Action.INSTITUTION_READ,
    Project: Action.PROJECT_READ,
    ChangeRequest: Action.PROJECT_READ,
}
_NAMES: Mapping[type, str] = {
    User: "User",
    TotpToken: "Token",
    Institution: "Institution",
    Project: "Project",
    ChangeRequest: "Request",
}


def can_see(user: User, obj: object) -> bool:
    """Whether the object is visible to the user at all (its read action reaches it)."""
    read = _READ_OF.get(type(obj))
    if read is None:
        return False
    return _reaches(user, _reach(user, read), obj)


def can(user: User, action: Action, obj: object | None = None) -> bool:
    """Whether `authorize` would let the user do the action (to the object, if given)."""
    reach = _reach(user, action)
    if reach is None:
        return False
    if obj is None:
        return True
    return _reaches(user, reach, obj)


def _reaches(user: User, reach: Reach | None, obj: object) -> bool:
    if reach is Reach.ANY:
        return True
    if reach is Reach.OWN:
        return _owns(user, obj)
    if reach is Reach.LEAD:
        return _leads(user, obj)
    return False


def authorize(user: User, action: Action, obj: object | None = None) -> None:
    """Allow the action or raise.

    Raises `NotFound` when an object is given that the user may not even see (so its existence
    does not leak), and `Forbidden` when the user sees it (or no object is given) but the role
    does not have the action.
    """
    if obj is not None and not can_see(user, obj):
        raise NotFound(f"{_NAMES.get(type(obj), 'Object')} not found.")
    if not can(user, action, obj):
        raise Forbidden(f"Your role ({user.role}) may not do {action}.")


# --- field-level rules: privilege changes ---------------------------------------------------------


def authorize_role_grant(actor: User | None, target: User | None, role: Role) -> None:
    """May `actor` give `role` to `target` (`None`: a new account)? `actor=None` is the system.

    Rules: nobody changes their own role; only the system (the command line, which already holds
    the platform's keys) creates or changes `ops` accounts or makes anyone `ops`.
    """
    if actor is None:
        return
    if target is not None and target.id == actor.id:
        raise Forbidden("Nobody may change their own role; ask another data steward.")
    if role is Role.OPS or (target is not None and target.role is Role.OPS):
        raise Forbidden(
            "Accounts with the ops role are created and changed only by the system "
            "(the `kluis` command line, without --as)."
        )


def authorize_status_change(actor: User | None, target: User) -> None:
    """May `actor` suspend, close or reactivate `target`? Same rules as for roles."""
    if actor is None:
        return
    if target.id == actor.id:
        raise Forbidden("Nobody may change the status of their own account.")
    if target.role is Role.OPS:
        raise Forbidden(
            "Accounts with the ops role are suspended and closed only by the system "
            "(the `kluis` command line, without --as)."
        )


# --- visibility filters for lists -----------------------------------------------------------------


def visible_users(stmt: S, user: User) -> S:
    """Narrow a `select(User)` to the accounts the user may see."""
    reach = _reach(user, Action.USER_READ)
    if reach is Reach.ANY:
        return stmt
    if reach is Reach.OWN:
        return stmt.where(User.id == user.id)
    return stmt.where(false())


def visible_tokens(stmt: S, user: User) -> S:
    """Narrow a `select(TotpToken)` to the tokens the user may see."""
    reach = _reach(user, Action.TOKEN_READ)
    if reach is Reach.ANY:
        return stmt
    if reach is Reach.OWN:
        return stmt.where(TotpToken.user_id == user.id)
    return stmt.where(false())


def visible_institutions(stmt: S, user: User) -> S:
    """Narrow a `select(Institution)` to the institutions the user may see."""
    reach = _reach(user, Action.INSTITUTION_READ)
    if reach is Reach.ANY:
        return stmt
    if reach is Reach.OWN and user.institution_id is not None:
        return stmt.where(Institution.id == user.institution_id)
    return stmt.where(false())


def visible_projects(stmt: S, user: User) -> S:
    """Narrow a `select(Project)` to the projects the user may see: all for staff who read
    projects; for a researcher, those they lead or are or were a member of."""
    reach = _reach(user, Action.PROJECT_READ)
    if reach is Reach.ANY:
        return stmt
    if reach is Reach.OWN:
        memberships = select(ProjectMember.project_id).where(ProjectMember.user_id == user.id)
        return stmt.where(or_(Project.lead_id == user.id, Project.id.in_(memberships)))
    return stmt.where(false())


def visible_requests(stmt: S, user: User) -> S:
    """Narrow a `select(ChangeRequest)` to the requests of projects the user may see."""
    reach = _reach(user, Action.PROJECT_READ)
    if reach is Reach.ANY:
        return stmt
    if reach is Reach.OWN:
        projects = visible_projects(select(Project.id), user)
        return stmt.where(ChangeRequest.project_id.in_(projects))
    return stmt.where(false())
