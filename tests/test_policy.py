"""The policy module: grants per role, object visibility, field-level escalation, scopes."""

from __future__ import annotations

import pytest
from admin_factories import make_institution, make_token, make_user
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import policy
from orchestrator.errors import Forbidden, NotFound
from orchestrator.models import Institution, Role, TotpToken, User, UserStatus
from orchestrator.policy import Action

STAFF_ADMIN_ACTIONS = [
    Action.INSTITUTION_MANAGE,
    Action.USER_CREATE,
    Action.USER_UPDATE,
    Action.USER_DISABLE,
    Action.USER_ROLE_CHANGE,
    Action.USER_RESET_PASSWORD,
    Action.USER_STATEMENT,
    Action.TOKEN_IMPORT,
    Action.TOKEN_ASSIGN,
    Action.TOKEN_REVOKE,
    Action.TOKEN_ENROL,
]


def person(role: Role, user_id: int = 1, institution_id: int | None = None) -> User:
    return User(
        id=user_id,
        username=f"u{user_id}",
        role=role,
        status=UserStatus.ACTIVE,
        institution_id=institution_id,
    )


@pytest.mark.parametrize("action", STAFF_ADMIN_ACTIONS)
def test_policy_data_steward_may_administer(action: Action) -> None:
    assert policy.can(person(Role.DATA_STEWARD), action)


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.OUTPUT_CHECKER, Role.OPS])
@pytest.mark.parametrize("action", STAFF_ADMIN_ACTIONS)
def test_policy_other_roles_may_not_administer(role: Role, action: Action) -> None:
    with pytest.raises(Forbidden):
        policy.authorize(person(role), action)


@pytest.mark.parametrize(
    "action", [Action.USER_READ, Action.TOKEN_READ, Action.AUDIT_READ, Action.HEALTH_READ]
)
def test_policy_ops_reads_accounts_tokens_audit_health(action: Action) -> None:
    policy.authorize(person(Role.OPS), action, None)


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.OUTPUT_CHECKER])
def test_policy_non_admin_sees_own_account_only(role: Role) -> None:
    me, other = person(role, 1), person(Role.RESEARCHER, 2)

    policy.authorize(me, Action.USER_READ, me)
    with pytest.raises(NotFound):
        policy.authorize(me, Action.USER_READ, other)


def test_policy_invisible_object_is_not_found_even_for_forbidden_action() -> None:
    me, other = person(Role.RESEARCHER, 1), person(Role.RESEARCHER, 2)

    with pytest.raises(NotFound):
        policy.authorize(me, Action.USER_DISABLE, other)


def test_policy_visible_object_without_grant_is_forbidden() -> None:
    me = person(Role.RESEARCHER, 1)

    with pytest.raises(Forbidden):
        policy.authorize(me, Action.USER_UPDATE, me)


def test_policy_researcher_sees_own_token_and_institution_only() -> None:
    me = person(Role.RESEARCHER, 1, institution_id=7)

    assert policy.can_see(me, TotpToken(user_id=1))
    assert not policy.can_see(me, TotpToken(user_id=2))
    assert not policy.can_see(me, TotpToken(user_id=None))
    assert policy.can_see(me, Institution(id=7))
    assert not policy.can_see(me, Institution(id=8))


@pytest.mark.parametrize("status", [UserStatus.PENDING, UserStatus.SUSPENDED, UserStatus.CLOSED])
def test_policy_inactive_account_may_do_nothing(status: UserStatus) -> None:
    steward = person(Role.DATA_STEWARD)
    steward.status = status

    assert not policy.can(steward, Action.USER_READ)
    with pytest.raises(NotFound):
        policy.authorize(steward, Action.USER_READ, steward)


@pytest.mark.parametrize("role", list(Role))
def test_policy_nobody_changes_own_role(role: Role) -> None:
    me = person(role)

    with pytest.raises(Forbidden, match="own role"):
        policy.authorize_role_grant(me, me, Role.DATA_STEWARD)


@pytest.mark.parametrize("role", list(Role))
def test_policy_nobody_changes_own_status(role: Role) -> None:
    me = person(role)

    with pytest.raises(Forbidden, match="own account"):
        policy.authorize_status_change(me, me)


def test_policy_steward_cannot_create_or_promote_ops() -> None:
    steward, other = person(Role.DATA_STEWARD, 1), person(Role.RESEARCHER, 2)

    with pytest.raises(Forbidden, match="ops"):
        policy.authorize_role_grant(steward, None, Role.OPS)
    with pytest.raises(Forbidden, match="ops"):
        policy.authorize_role_grant(steward, other, Role.OPS)


def test_policy_steward_cannot_demote_or_suspend_ops() -> None:
    steward, ops = person(Role.DATA_STEWARD, 1), person(Role.OPS, 2)

    with pytest.raises(Forbidden):
        policy.authorize_role_grant(steward, ops, Role.RESEARCHER)
    with pytest.raises(Forbidden):
        policy.authorize_status_change(steward, ops)


def test_policy_steward_may_grant_staff_roles_to_others() -> None:
    steward, other = person(Role.DATA_STEWARD, 1), person(Role.RESEARCHER, 2)

    policy.authorize_role_grant(steward, other, Role.OUTPUT_CHECKER)
    policy.authorize_role_grant(steward, None, Role.DATA_STEWARD)


def test_policy_system_may_grant_ops() -> None:
    policy.authorize_role_grant(None, person(Role.RESEARCHER), Role.OPS)
    policy.authorize_status_change(None, person(Role.OPS))


@pytest.mark.parametrize("role", list(Role))
def test_policy_scopes_for_role_within_vocabulary(role: Role) -> None:
    scopes = policy.scopes_for_role(role)

    assert "read" in scopes
    assert scopes <= policy.ALL_SCOPES


def test_policy_only_data_stewards_get_admin_scope() -> None:
    assert [r for r in Role if "admin" in policy.scopes_for_role(r)] == [Role.DATA_STEWARD]


def test_policy_scope_check_for_api_tokens() -> None:
    policy.authorize_scopes({"read"}, Action.USER_READ)
    with pytest.raises(Forbidden, match="'admin' scope"):
        policy.authorize_scopes({"read"}, Action.USER_DISABLE)


def test_policy_visible_users_researcher_only_self(db_session: Session) -> None:
    me = make_user(db_session)
    make_user(db_session)
    make_user(db_session, role=Role.DATA_STEWARD)

    ids = db_session.scalars(policy.visible_users(select(User.id), me)).all()

    assert ids == [me.id]


def test_policy_visible_users_staff_sees_all(db_session: Session) -> None:
    ops = make_user(db_session, role=Role.OPS)
    others = [make_user(db_session).id for _ in range(2)]

    ids = set(db_session.scalars(policy.visible_users(select(User.id), ops)))

    assert {ops.id, *others} <= ids


def test_policy_visible_tokens_and_institutions_of_researcher(db_session: Session) -> None:
    mine = make_institution(db_session)
    make_institution(db_session)
    me = make_user(db_session, institution=mine)
    own = make_token(db_session, user=me)
    make_token(db_session, user=make_user(db_session))
    make_token(db_session)

    tokens = db_session.scalars(policy.visible_tokens(select(TotpToken.id), me)).all()
    institutions = db_session.scalars(policy.visible_institutions(select(Institution.id), me)).all()

    assert tokens == [own.id]
    assert institutions == [mine.id]


def test_policy_visible_lists_empty_for_staff_without_institution(db_session: Session) -> None:
    checker = make_user(db_session, role=Role.OUTPUT_CHECKER)
    make_institution(db_session)

    institutions = db_session.scalars(
        policy.visible_institutions(select(Institution.id), checker)
    ).all()

    assert institutions == []
