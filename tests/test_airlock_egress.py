"""Airlock egress on SQLite and PostgreSQL: frozen copies are what is checked, reviewed and
released (workspace edits afterwards change nothing); every (state, action) outside the table is a
409; four-eyes and self-review rules; release manifests verify and break when edited; downloads
only by the project's current members, checksum verified, audited."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from project_factories import make_project, make_researcher, make_staff
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import airlock, airlock_egress
from orchestrator.airlock_egress import OUTPUT_TRANSITIONS, FileSpec
from orchestrator.airlock_models import (
    OutputKind,
    OutputRequest,
    OutputState,
    ReviewDecision,
)
from orchestrator.config import Settings
from orchestrator.errors import Conflict, Forbidden, Invalid, NotFound
from orchestrator.models import (
    AuditEvent,
    MemberRole,
    OutboxMessage,
    ProjectMember,
    ProjectState,
    Role,
)

S = OutputState
TABLE = b"region,count\nNorth,120\nSouth,85\n"
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.fixture
def settings(db_settings: Settings, tmp_path: Path) -> Settings:
    return db_settings.model_copy(
        update={"airlock_dir": tmp_path / "airlock", "project_storage_root": tmp_path / "projects"}
    )


@pytest.fixture
def w(db_session: Session, settings: Settings) -> dict:
    db_session.info["settings"] = settings
    member = make_researcher(db_session)
    project = make_project(db_session, state=ProjectState.ACTIVE, members=[member])
    export = airlock.project_area(settings, project, "export")
    export.mkdir(parents=True)
    (export / "table.csv").write_bytes(TABLE)
    (export / "model.txt").write_text("OLS results\nDf Residuals: 480\n")
    return {
        "project": project,
        "member": member,
        "lead": project.lead,
        "checkers": [make_staff(db_session, Role.OUTPUT_CHECKER) for _ in range(3)],
        "steward": make_staff(db_session, Role.DATA_STEWARD),
        "export": export,
    }


def new_request(session, settings, w, files=None) -> OutputRequest:
    specs = files or [
        FileSpec("table.csv", OutputKind.TABLE, "Counts by region", "rounded to 5"),
        FileSpec("model.txt", OutputKind.MODEL, "Regression of income"),
    ]
    return airlock_egress.create_request(
        session, settings, w["member"], w["project"], "Regional counts", specs, NOW
    )


def submitted(session, settings, w) -> OutputRequest:
    request = new_request(session, settings, w)
    return airlock_egress.submit_request(session, settings, w["member"], request, None, NOW)


def approve(session, w, request, who: int) -> None:
    airlock_egress.review_request(
        session, w["checkers"][who], request, ReviewDecision.APPROVE, "", {}, None, NOW
    )


def test_egress_submit_freezes_and_checks_the_copy(db_session, settings, w):
    request = submitted(db_session, settings, w)
    assert request.state is S.CHECKED
    table = request.files[0]
    assert table.verdict == "pass"
    assert table.sha256 == __import__("hashlib").sha256(TABLE).hexdigest()
    (w["export"] / "table.csv").write_bytes(b"region,count\nNorth,3\n")  # edited afterwards
    frozen = airlock_egress.frozen_path(settings, table)
    assert frozen.read_bytes() == TABLE
    assert request.policy_version == "acro-defaults-1"
    actions = db_session.scalars(
        select(AuditEvent.action).where(AuditEvent.object_type == "output_request")
    ).all()
    assert actions == [
        "airlock_output_created",
        "airlock_output_submitted",
        "airlock_output_checked",
    ]


def test_egress_full_flow_two_approvals_release_download(db_session, settings, w):
    request = submitted(db_session, settings, w)
    approve(db_session, w, request, 0)
    assert request.state is S.IN_REVIEW
    approve(db_session, w, request, 1)
    assert request.state is S.APPROVED
    airlock_egress.release_request(db_session, settings, w["checkers"][2], request, None, NOW)
    assert request.state is S.RELEASED
    assert airlock_egress.verify_manifest(settings, request.manifest)
    manifest = request.manifest["manifest"]
    assert [f["sha256"] for f in manifest["files"]] == [f.sha256 for f in request.files]
    assert [r["decision"] for r in manifest["reviews"]] == ["approve", "approve"]
    path = airlock_egress.open_download(db_session, settings, w["member"], request.files[0], NOW)
    assert path.read_bytes() == TABLE
    downloads = db_session.scalars(
        select(AuditEvent).where(AuditEvent.action == "airlock_output_downloaded")
    ).all()
    assert len(downloads) == 1


def test_egress_manifest_edit_breaks_verification(db_session, settings, w):
    request = submitted(db_session, settings, w)
    approve(db_session, w, request, 0)
    approve(db_session, w, request, 1)
    airlock_egress.release_request(db_session, settings, w["checkers"][2], request, None, NOW)
    document = json.loads(json.dumps(request.manifest))
    document["manifest"]["files"][0]["sha256"] = "0" * 64
    assert not airlock_egress.verify_manifest(settings, document)
    other = settings.model_copy(update={"airlock_dir": settings.effective_airlock_dir / "other"})
    assert not airlock_egress.verify_manifest(other, request.manifest)


def test_egress_download_by_current_members_only_and_only_released(db_session, settings, w):
    request = submitted(db_session, settings, w)
    with pytest.raises(Conflict):
        airlock_egress.open_download(db_session, settings, w["member"], request.files[0], NOW)
    approve(db_session, w, request, 0)
    approve(db_session, w, request, 1)
    airlock_egress.release_request(db_session, settings, w["checkers"][2], request, None, NOW)
    # the lead (a member who did not ask) downloads too
    path = airlock_egress.open_download(db_session, settings, w["lead"], request.files[0], NOW)
    assert path.read_bytes() == TABLE
    assert airlock_egress.may_download(w["lead"], request)
    with pytest.raises(NotFound):  # a researcher of another project
        airlock_egress.open_download(
            db_session, settings, make_researcher(db_session), request.files[0], NOW
        )
    for staff in (w["checkers"][0], w["steward"]):  # staff see the request, never the bytes
        with pytest.raises(Forbidden):
            airlock_egress.open_download(db_session, settings, staff, request.files[0], NOW)
        assert not airlock_egress.may_download(staff, request)
    former = make_researcher(db_session)
    w["project"].members.append(
        ProjectMember(user_id=former.id, role=MemberRole.RESEARCHER, added_at=NOW, removed_at=NOW)
    )
    db_session.flush()
    with pytest.raises(Forbidden):  # a former member
        airlock_egress.open_download(db_session, settings, former, request.files[0], NOW)
    downloads = db_session.scalars(
        select(AuditEvent).where(AuditEvent.action == "airlock_output_downloaded")
    ).all()
    assert [(d.actor_id, d.details["path"]) for d in downloads] == [(w["lead"].id, "table.csv")]


def test_egress_tampered_frozen_copy_is_not_released_or_downloaded(db_session, settings, w):
    request = submitted(db_session, settings, w)
    approve(db_session, w, request, 0)
    approve(db_session, w, request, 1)
    frozen = airlock_egress.frozen_path(settings, request.files[0])
    os.chmod(frozen, 0o600)
    frozen.write_bytes(b"region,count\nNorth,1\n")
    with pytest.raises(Conflict):
        airlock_egress.release_request(db_session, settings, w["checkers"][2], request, None, NOW)
    assert request.state is S.APPROVED


def test_egress_submitter_and_members_never_review(db_session, settings, w):
    request = submitted(db_session, settings, w)
    for person in (w["member"], w["lead"], w["steward"]):
        with pytest.raises(Forbidden):
            airlock_egress.review_request(
                db_session, person, request, ReviewDecision.APPROVE, "", {}, None, NOW
            )
    inside = w["checkers"][0]
    w["project"].members.append(ProjectMember(user_id=inside.id, role=MemberRole.RESEARCHER))
    db_session.flush()
    with pytest.raises(Forbidden):
        approve(db_session, w, request, 0)
    assert request not in airlock_egress.review_queue(db_session, inside)


def test_egress_same_checker_cannot_approve_twice(db_session, settings, w):
    request = submitted(db_session, settings, w)
    approve(db_session, w, request, 0)
    with pytest.raises(Conflict):
        approve(db_session, w, request, 0)
    assert request.state is S.IN_REVIEW


def test_egress_required_approvals_per_project(db_session, settings, w):
    project = w["project"]
    assert project.airlock_approvals == 2  # the default
    for who in (w["member"], w["lead"], w["checkers"][0]):
        with pytest.raises(Forbidden):
            airlock_egress.set_required_approvals(db_session, who, project, 1, None, NOW)
    for bad in (0, 6):
        with pytest.raises(Invalid):
            airlock_egress.set_required_approvals(db_session, w["steward"], project, bad, None, NOW)
    with pytest.raises(Conflict):  # a stale version
        airlock_egress.set_required_approvals(
            db_session, w["steward"], project, 1, project.version + 1, NOW
        )
    airlock_egress.set_required_approvals(
        db_session, w["steward"], project, 1, project.version, NOW
    )
    assert project.airlock_approvals == 1
    event = db_session.scalars(
        select(AuditEvent).where(AuditEvent.action == "airlock_approvals_changed")
    ).one()
    assert (event.actor_id, event.details["from"], event.details["to"]) == (
        w["steward"].id,
        2,
        1,
    )
    request = submitted(db_session, settings, w)
    assert request.required_approvals == 1
    approve(db_session, w, request, 0)
    assert request.state is S.APPROVED


def test_egress_request_keeps_the_approvals_it_was_submitted_with(db_session, settings, w):
    request = submitted(db_session, settings, w)
    airlock_egress.set_required_approvals(db_session, w["steward"], w["project"], 3, None, NOW)
    approve(db_session, w, request, 0)
    approve(db_session, w, request, 1)
    assert request.state is S.APPROVED
    assert request.required_approvals == 2


def test_egress_return_with_comments_and_resubmit_makes_new_version(db_session, settings, w):
    request = submitted(db_session, settings, w)
    with pytest.raises(Invalid):
        airlock_egress.review_request(
            db_session, w["checkers"][0], request, ReviewDecision.RETURN, "", {}, None, NOW
        )
    airlock_egress.review_request(
        db_session,
        w["checkers"][0],
        request,
        ReviewDecision.RETURN,
        "Round the counts",
        {request.files[0].id: "Use base 5"},
        None,
        NOW,
    )
    assert request.state is S.RETURNED
    assert request.reviews[0].file_comments == {str(request.files[0].id): "Use base 5"}
    again = airlock_egress.resubmit_request(db_session, settings, w["member"], request, NOW)
    assert (again.state, again.revision, again.previous_id) == (S.DRAFT, 2, request.id)


def test_egress_reject_and_withdraw(db_session, settings, w):
    request = submitted(db_session, settings, w)
    airlock_egress.review_request(
        db_session, w["checkers"][0], request, ReviewDecision.REJECT, "Microdata", {}, None, NOW
    )
    assert request.state is S.REJECTED
    other = submitted(db_session, settings, w)
    with pytest.raises(Forbidden):
        airlock_egress.withdraw_request(db_session, w["lead"], other, None, NOW)
    airlock_egress.withdraw_request(db_session, w["member"], other, None, NOW)
    assert other.state is S.WITHDRAWN


def test_egress_every_state_action_outside_the_table_is_a_conflict(db_session, settings, w):
    request = new_request(db_session, settings, w)
    for state in OutputState:
        for action in ("submit", "approve", "return", "reject", "release", "withdraw"):
            request.state = state
            if (state, action) in OUTPUT_TRANSITIONS:
                continue
            with pytest.raises(Conflict):
                airlock_egress._step(request, action)


def test_egress_stale_version_is_a_conflict(db_session, settings, w):
    request = new_request(db_session, settings, w)
    with pytest.raises(Conflict):
        airlock_egress.submit_request(
            db_session, settings, w["member"], request, request.version + 1, NOW
        )


@pytest.mark.parametrize("path", ["../import/x.csv", "/etc/passwd", "a\u202e.csv", "missing.csv"])
def test_egress_paths_outside_export_refused(db_session, settings, w, path):
    with pytest.raises(Invalid):
        new_request(db_session, settings, w, [FileSpec(path, OutputKind.TABLE, "x")])


def test_egress_symlink_in_export_refused(db_session, settings, w, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_bytes(TABLE)
    (w["export"] / "link.csv").symlink_to(secret)
    with pytest.raises(Invalid):
        new_request(db_session, settings, w, [FileSpec("link.csv", OutputKind.TABLE, "x")])


def test_egress_symlink_swapped_in_after_draft_refused_at_submit(db_session, settings, w, tmp_path):
    request = new_request(db_session, settings, w)
    secret = tmp_path / "secret.csv"
    secret.write_bytes(TABLE)
    (w["export"] / "table.csv").unlink()
    (w["export"] / "table.csv").symlink_to(secret)
    with pytest.raises(Invalid):
        airlock_egress.submit_request(db_session, settings, w["member"], request, None, NOW)


def test_egress_only_current_members_of_active_projects_ask(db_session, settings, w):
    with pytest.raises(NotFound):
        airlock_egress.authorize_submitter(make_researcher(db_session), w["project"])
    with pytest.raises(Forbidden):
        airlock_egress.authorize_submitter(w["checkers"][0], w["project"])
    w["project"].state = ProjectState.FROZEN
    with pytest.raises(Conflict):
        airlock_egress.authorize_submitter(w["member"], w["project"])


def test_egress_failing_table_is_flagged_but_people_decide(db_session, settings, w):
    (w["export"] / "small.csv").write_bytes(b"region,count\nNorth,3\n")
    request = new_request(
        db_session, settings, w, [FileSpec("small.csv", OutputKind.TABLE, "Counts")]
    )
    preflight = airlock_egress.preflight(settings, request)
    assert preflight[request.files[0].id].verdict.value == "fail"
    airlock_egress.submit_request(db_session, settings, w["member"], request, None, NOW)
    assert request.files[0].verdict == "fail"
    approve(db_session, w, request, 0)  # the checks inform; people decide
    assert request.state is S.IN_REVIEW


def test_egress_queue_oldest_first_light_lane_and_working_days(db_session, settings, w):
    first = submitted(db_session, settings, w)
    light = new_request(db_session, settings, w)
    light.light = True
    airlock_egress.submit_request(
        db_session, settings, w["member"], light, None, NOW + timedelta(hours=1)
    )
    checker = w["checkers"][0]
    normal_lane = airlock_egress.review_queue(db_session, checker, light=False)
    assert [r.id for r in normal_lane if r.project_id == w["project"].id] == [first.id]
    light_lane = airlock_egress.review_queue(db_session, checker, light=True)
    assert [r.id for r in light_lane if r.project_id == w["project"].id] == [light.id]
    friday = datetime(2026, 11, 27, 9, tzinfo=UTC)
    assert airlock_egress.working_days_since(friday, friday + timedelta(days=4)) == 2


def _acro_folder(export: Path, table: bytes, checksum_of: bytes) -> None:
    """What ACRO's `finalise` writes: results.json, the outputs, and checksums/<name>.txt."""
    folder = export / "acro"
    (folder / "checksums").mkdir(parents=True)
    (folder / "output_0_0.csv").write_bytes(table)
    (folder / "checksums" / "output_0_0.csv.txt").write_text(
        __import__("hashlib").sha256(checksum_of).hexdigest()
    )
    results = {
        "version": "0.4.8",
        "results": {
            "output_0": {
                "uid": "output_0",
                "status": "fail",
                "type": "table",
                "files": [{"name": "output_0_0.csv", "sdc": {}}],
                "summary": "fail; threshold: 2 cells suppressed;",
                "exception": "Needed for the paper",
                "comments": [],
            },
            "output_1": {
                "uid": "output_1",
                "status": "pass",
                "type": "table",
                "files": [{"name": "missing.csv", "sdc": {}}],
                "summary": "pass",
            },
        },
    }
    (folder / "results.json").write_text(json.dumps(results))


def _acro_request(session, settings, w) -> OutputRequest:
    specs = [
        FileSpec("acro/results.json", OutputKind.TEXT, "ACRO results"),
        FileSpec("acro/output_0_0.csv", OutputKind.TABLE, "Counts by region"),
        FileSpec("acro/checksums/output_0_0.csv.txt", OutputKind.TEXT, "ACRO checksum"),
    ]
    request = new_request(session, settings, w, specs)
    return airlock_egress.submit_request(session, settings, w["member"], request, None, NOW)


def test_egress_acro_results_verdicts_and_checksums_shown(db_session, settings, w):
    _acro_folder(w["export"], TABLE, TABLE)
    request = _acro_request(db_session, settings, w)
    results, table, _checksum = request.files
    acro = [f for f in table.findings if f["rule"].startswith("acro")]
    assert {(f["rule"], f["verdict"]) for f in acro} == {
        ("acro", "fail"),
        ("acro_checksum", "pass"),
    }
    assert "Needed for the paper" in next(f for f in acro if f["rule"] == "acro")["detail"]
    assert table.verdict == "fail"
    assert any("missing.csv" in f["detail"] for f in results.findings)


def test_egress_acro_checksum_mismatch_fails_the_file(db_session, settings, w):
    _acro_folder(w["export"], TABLE, b"what ACRO really checked\n")
    request = _acro_request(db_session, settings, w)
    table = request.files[1]
    assert ("acro_checksum", "fail") in {(f["rule"], f["verdict"]) for f in table.findings}


def test_egress_acro_findings_in_the_preflight(db_session, settings, w):
    _acro_folder(w["export"], TABLE, TABLE)
    specs = [
        FileSpec("acro/results.json", OutputKind.TEXT, "ACRO results"),
        FileSpec("acro/output_0_0.csv", OutputKind.TABLE, "Counts by region"),
    ]
    request = new_request(db_session, settings, w, specs)
    preflight = airlock_egress.preflight(settings, request)
    assert preflight[request.files[1].id].verdict.value == "fail"


def test_egress_release_interrupted_before_commit_is_redone(db_session, settings, w):
    request = submitted(db_session, settings, w)
    approve(db_session, w, request, 0)
    approve(db_session, w, request, 1)
    db_session.commit()  # (a savepoint in this test's transaction)
    try:
        with db_session.begin_nested():
            airlock_egress.release_request(
                db_session, settings, w["checkers"][2], request, None, NOW
            )
            raise RuntimeError("the process dies before the commit")
    except RuntimeError:
        pass
    db_session.expire_all()
    assert request.state is S.APPROVED
    airlock_egress.release_request(db_session, settings, w["checkers"][2], request, None, NOW)
    assert request.state is S.RELEASED
    assert airlock_egress.verify_manifest(settings, request.manifest)


def test_egress_submit_after_an_interrupted_freeze_starts_again(db_session, settings, w):
    request = new_request(db_session, settings, w)
    leftover = airlock_egress.outputs_dir(settings, request)
    leftover.mkdir(parents=True)
    (leftover / "0001.csv").write_bytes(b"half a copy")
    airlock_egress.submit_request(db_session, settings, w["member"], request, None, NOW)
    assert airlock_egress.frozen_path(settings, request.files[0]).read_bytes() == TABLE


EGRESS_ACTIONS = ("submit", "approve", "return", "reject", "release", "withdraw", "resubmit")
ACTORS = ("submitter", "lead", "outsider", "checker", "steward", "ops")
# Independent of the code: which role may take which action at all, and from which states.
MAY = {
    "submitter": {"submit", "withdraw", "resubmit"},
    "checker": {"approve", "return", "reject", "release"},
}
FROM = {
    "submit": {S.DRAFT},
    "approve": {S.CHECKED, S.IN_REVIEW},
    "return": {S.CHECKED, S.IN_REVIEW},
    "reject": {S.CHECKED, S.IN_REVIEW},
    "release": {S.APPROVED},
    "withdraw": {S.DRAFT, S.CHECKED, S.IN_REVIEW},
    "resubmit": {S.RETURNED},
}


def _take(session, settings, actor, request, action):
    if action == "submit":
        return airlock_egress.submit_request(session, settings, actor, request, None, NOW)
    if action in ("approve", "return", "reject"):
        return airlock_egress.review_request(
            session, actor, request, ReviewDecision(action), "reason", {}, None, NOW
        )
    if action == "release":
        return airlock_egress.release_request(session, settings, actor, request, None, NOW)
    if action == "withdraw":
        return airlock_egress.withdraw_request(session, actor, request, None, NOW)
    return airlock_egress.resubmit_request(session, settings, actor, request, NOW)


@pytest.mark.parametrize("state", list(OutputState))
@pytest.mark.parametrize("action", EGRESS_ACTIONS)
def test_egress_every_state_action_role(db_session, settings, w, state, action):
    request = submitted(db_session, settings, w)  # files frozen, so every state is realistic
    request.state = state
    db_session.flush()
    people = {
        "submitter": w["member"],
        "lead": w["lead"],
        "outsider": make_researcher(db_session),
        "checker": w["checkers"][0],
        "steward": w["steward"],
        "ops": make_staff(db_session, Role.OPS),
    }
    for who in ACTORS:
        with db_session.begin_nested() as attempt:
            if who == "outsider":
                expected: type[Exception] | None = NotFound
            elif action not in MAY.get(who, set()):
                expected = Forbidden
            elif state not in FROM[action]:
                expected = Conflict
            else:
                expected = None
            if expected is None:
                _take(db_session, settings, people[who], request, action)
            else:
                with pytest.raises(expected):
                    _take(db_session, settings, people[who], request, action)
            attempt.rollback()
        db_session.expire_all()


def test_egress_folder_swapped_for_a_link_during_freeze_is_refused(settings, w, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "t.csv").write_bytes(TABLE)
    (w["export"] / "sub").symlink_to(outside)  # as if swapped in after the path check
    with pytest.raises(OSError, match=r"Too many levels of symbolic links|Not a directory"):
        airlock_egress.open_no_links(w["export"], "sub/t.csv")
    (w["export"] / "real").mkdir()
    (w["export"] / "real" / "t.csv").write_bytes(TABLE)
    fd = airlock_egress.open_no_links(w["export"], "real/t.csv")
    os.close(fd)


def test_egress_sweep_deletes_frozen_files_of_ended_requests_after_retention(
    db_session, settings, w
):
    rejected = submitted(db_session, settings, w)
    airlock_egress.review_request(
        db_session, w["checkers"][0], rejected, ReviewDecision.REJECT, "No", {}, None, NOW
    )
    live = submitted(db_session, settings, w)
    folder = airlock_egress.outputs_dir(settings, rejected)
    assert airlock_egress.sweep_outputs(db_session, settings, NOW + timedelta(days=1)) == 0
    assert folder.exists()
    assert airlock_egress.sweep_outputs(db_session, settings, NOW + timedelta(days=31)) == 1
    assert not folder.exists()
    assert airlock_egress.outputs_dir(settings, live).exists()
    assert rejected.files[0].sha256  # the record stays


def _mail(session: Session, needle: str) -> set[str]:
    return {m.to_address for m in session.scalars(select(OutboxMessage)) if needle in m.subject}


def test_egress_withdrawal_tells_the_submitter_and_the_checkers(db_session, settings, w):
    request = submitted(db_session, settings, w)
    checkers = {c.email for c in w["checkers"]}
    assert _mail(db_session, f"request {request.id} awaits review") == checkers  # no stewards
    airlock_egress.withdraw_request(db_session, w["member"], request, None, NOW)
    assert request.state is S.WITHDRAWN
    assert _mail(db_session, f"request {request.id} withdrawn") == {w["member"].email}
    assert _mail(db_session, f"request {request.id} was withdrawn") == checkers
    draft = new_request(db_session, settings, w)  # never in the queue: only the submitter hears
    airlock_egress.withdraw_request(db_session, w["member"], draft, None, NOW)
    assert _mail(db_session, f"request {draft.id} withdrawn") == {w["member"].email}
    assert _mail(db_session, f"request {draft.id} was withdrawn") == set()


def test_egress_submit_interrupted_after_copying_converges_on_rerun(db_session, settings, w):
    """The files were frozen but the transaction never committed (the process died): the
    request is still a draft with no hashes, and submitting again freezes afresh."""
    request = new_request(db_session, settings, w)
    db_session.commit()  # (a savepoint in this test's transaction)
    try:
        with db_session.begin_nested():
            airlock_egress.submit_request(db_session, settings, w["member"], request, None, NOW)
            raise RuntimeError("the process dies before the commit")
    except RuntimeError:
        pass
    db_session.expire_all()
    assert request.state is S.DRAFT
    assert [f.sha256 for f in request.files] == ["", ""]
    assert airlock_egress.outputs_dir(settings, request).exists()  # the copies stayed behind
    (w["export"] / "table.csv").write_bytes(b"region,count\nNorth,125\n")
    airlock_egress.submit_request(db_session, settings, w["member"], request, None, NOW)
    frozen = airlock_egress.frozen_path(settings, request.files[0])
    assert frozen.read_bytes() == b"region,count\nNorth,125\n"
    assert request.files[0].sha256 == airlock_egress._sha256(frozen)
    assert sorted(p.name for p in airlock_egress.outputs_dir(settings, request).iterdir()) == [
        "0001.csv",
        "0002.txt",
    ]
