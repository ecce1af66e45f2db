"""Disclosure checks against hand-made tables with known verdicts, and the policy file."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.airlock_models import OutputKind, Verdict
from orchestrator.disclosure import (
    Policy,
    check_csv_table,
    check_model_text,
    check_output,
    load_policy,
)
from orchestrator.errors import Invalid

P = Policy()


def rules(findings: list[dict[str, str]], verdict: str) -> set[str]:
    return {f["rule"] for f in findings if f["verdict"] == verdict}


def test_disclosure_safe_frequency_table_passes():
    findings = check_csv_table(b"region,men,women\nNorth,120,85\nSouth,40,55\n", P)
    assert [f["verdict"] for f in findings] == ["pass"]


def test_disclosure_small_cell_fails_and_names_the_cell():
    findings = check_csv_table(b"region,men,women\nNorth,120,5\nSouth,40,55\n", P)
    assert rules(findings, "fail") == {"min_cell_count"}
    assert "row 2, column women" in findings[0]["detail"]


def test_disclosure_zero_cell_fails_unless_policy_allows():
    table = b"region,count\nNorth,0\nSouth,40\n"
    assert rules(check_csv_table(table, P), "fail") == {"zero_cell"}
    relaxed = Policy(zeros_disclosive=False)
    assert [f["verdict"] for f in check_csv_table(table, relaxed)] == ["pass"]


def test_disclosure_unrounded_count_needs_review():
    assert rules(check_csv_table(b"region,count\nNorth,123\n", P), "review") == {"rounding"}


def test_disclosure_thresholds_come_from_the_policy():
    table = b"region,count\nNorth,15\n"
    assert rules(check_csv_table(table, Policy(min_cell_count=20)), "fail") == {"min_cell_count"}
    assert [f["verdict"] for f in check_csv_table(table, P)] == ["pass"]


def test_disclosure_identifier_column_is_microdata():
    findings = check_csv_table(b"RINPERSOON,income\n123456789,40000\n", P)
    assert rules(findings, "fail") == {"microdata"}


def test_disclosure_many_rows_is_microdata():
    body = b"".join(b"%d,%d\n" % (i, 10 + i) for i in range(1500))
    assert rules(check_csv_table(b"k,v\n" + body, P), "fail") == {"microdata"}


@pytest.mark.parametrize(
    ("row", "failed"),
    [
        (b"North,50,10000,3000,2000", set()),  # top-2 hold 50 %, others 5000 > 10 % of 3000
        (b"North,50,10000,4700,4600", {"dominance"}),  # top-2 hold 93 %, others 700
        (b"North,50,10000,8000,1500", {"dominance", "p_ratio"}),  # others 500 < 800
        (b"North,5,10000,3000,2000", {"min_cell_count"}),
    ],
)
def test_disclosure_magnitude_table_dominance_and_p_ratio(row, failed):
    findings = check_csv_table(b"region,n,total,max1,max2\n" + row + b"\n", P)
    assert rules(findings, "fail") == failed


def test_disclosure_model_residual_df():
    assert rules(check_model_text("Df Residuals:   8\n", P), "fail") == {"residual_df"}
    assert rules(check_model_text("Df Residuals: 1234\n", P), "pass") == {"residual_df"}
    assert rules(check_model_text("no summary here", P), "review") == {"residual_df"}


def test_disclosure_file_type_by_extension_and_content(tmp_path: Path):
    fake = tmp_path / "table.csv"
    fake.write_bytes(Path("/usr/bin/true").read_bytes())
    assert check_output(fake, "table.csv", OutputKind.TABLE, P).verdict is Verdict.FAIL
    exe = tmp_path / "x.exe"
    exe.write_bytes(b"region,count\nNorth,20\n")
    assert check_output(exe, "x.exe", OutputKind.TABLE, P).verdict is Verdict.FAIL
    good = tmp_path / "t.csv"
    good.write_bytes(b"region,count\nNorth,20\nSouth,35\n")
    assert check_output(good, "t.csv", OutputKind.TABLE, P).verdict is Verdict.PASS
    text = tmp_path / "notes.txt"
    text.write_text("A summary of the method.\n")
    assert check_output(text, "notes.txt", OutputKind.TEXT, P).verdict is Verdict.REVIEW


def test_disclosure_policy_file_is_versioned_and_strict(tmp_path: Path):
    path = tmp_path / "policy.yaml"
    path.write_text("version: '2027-1'\nmin_cell_count: 15\n")
    policy = load_policy(path)
    assert (policy.version, policy.min_cell_count, policy.rounding_base) == ("2027-1", 15, 5)
    path.write_text("min_cell_count: 15\n")
    with pytest.raises(Invalid):
        load_policy(path)
    path.write_text("version: x\nmin_cel_count: 15\n")
    with pytest.raises(Invalid):
        load_policy(path)


def _workbook(path: Path, rows: list[list[object]]) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Counts"
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def test_disclosure_xlsx_table_checked_cell_by_cell(tmp_path: Path):
    safe = _workbook(tmp_path / "safe.xlsx", [["region", "count"], ["North", 120], ["South", 85]])
    check = check_output(safe, "safe.xlsx", OutputKind.TABLE, P)
    assert check.verdict is Verdict.PASS, check.findings
    risky = _workbook(tmp_path / "risky.xlsx", [["region", "count"], ["North", 3]])
    check = check_output(risky, "risky.xlsx", OutputKind.TABLE, P)
    assert check.verdict is Verdict.FAIL
    assert any("sheet Counts" in f["detail"] for f in check.findings)
