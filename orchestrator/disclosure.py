"""Automated disclosure checks of output files against a versioned policy (pure: file in, findings
out). The checks inform; output checkers decide.

Defaults follow the ACRO rules (SPEC.md): minimum cell count 10, dominance top-2 ≤ 90 %, p-ratio
10 %, residual degrees of freedom ≥ 10, zeros disclosive, rounding base 5. A policy file (YAML,
`KLUIS_AIRLOCK_POLICY_FILE`) replaces any of them and must name its `version`.

What is checked, per kind:
- every file: extension allowed for its kind, and content of the matching type (libmagic);
- table (CSV): row-level identifiers or too many rows → fail (microdata-like); a magnitude table
  (columns `n`, `total`, `max1`, `max2` per cell) → minimum count, dominance and p-ratio per row;
  otherwise a frequency table: every count cell is checked (zero, below the minimum, not rounded);
- model (text): "Df Residuals" / "residual degrees of freedom" below the minimum → fail; not found
  → review;
- table (XLSX): every sheet with the same rules (cached values);
- figure, text: review (people look at them).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import magic
import openpyxl
import yaml

from orchestrator.airlock_models import OutputKind, Verdict
from orchestrator.errors import Invalid

MAX_CHECKED_BYTES = 50 * 1024 * 1024
MAX_FINDINGS_PER_FILE = 20
_ORDER = {Verdict.PASS: 0, Verdict.REVIEW: 1, Verdict.FAIL: 2}


@dataclass(frozen=True)
class Policy:
    version: str = "acro-defaults-1"
    min_cell_count: int = 10
    dominance_n: int = 2
    dominance_k: float = 90.0  # percent
    p_ratio: float = 10.0  # percent
    min_residual_df: int = 10
    zeros_disclosive: bool = True
    rounding_base: int = 5
    max_table_rows: int = 1000
    identifier_columns: tuple[str, ...] = (
        "id",
        "rin",
        "rinpersoon",
        "rinpersoons",
        "bsn",
        "person_id",
        "persoon_id",
        "ssn",
        "nin",
        "record_id",
        "a_nr",
        "address_id",
        "postcode",
    )
    allowed_extensions: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "table": (".csv", ".xlsx"),
            "model": (".txt", ".csv", ".log"),
            "figure": (".png", ".jpg", ".jpeg", ".pdf", ".svg"),
            "text": (".txt", ".md", ".pdf"),
        }
    )


_TYPES_BY_EXTENSION: dict[str, tuple[str, ...]] = {
    ".csv": ("text/csv", "text/plain", "application/csv"),
    ".txt": ("text/plain", "text/csv"),
    ".log": ("text/plain",),
    ".md": ("text/plain", "text/markdown"),
    ".png": ("image/png",),
    ".jpg": ("image/jpeg",),
    ".jpeg": ("image/jpeg",),
    ".pdf": ("application/pdf",),
    ".svg": ("image/svg+xml", "text/xml", "text/plain"),
    ".xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",),
}


def load_policy(path: Path | None) -> Policy:
    """The built-in policy, or the one in `path` (YAML mapping; unknown keys refused)."""
    if path is None:
        return Policy()
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise Invalid(f"The disclosure policy {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("version"), str):
        raise Invalid("The disclosure policy must be a mapping with a string 'version'.")
    known = set(Policy.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise Invalid(f"Unknown keys in the disclosure policy: {', '.join(sorted(unknown))}.")
    values: dict[str, Any] = dict(data)
    if "identifier_columns" in values:
        values["identifier_columns"] = tuple(str(c).lower() for c in values["identifier_columns"])
    if "allowed_extensions" in values:
        values["allowed_extensions"] = {
            str(k): tuple(str(e).lower() for e in v)
            for k, v in dict(values["allowed_extensions"]).items()
        }
    return Policy(**values)


@dataclass(frozen=True)
class FileCheck:
    verdict: Verdict
    findings: list[dict[str, str]]


def _finding(rule: str, verdict: Verdict, detail: str) -> dict[str, str]:
    return {"rule": rule, "verdict": verdict.value, "detail": detail}


def worst(verdicts: list[Verdict]) -> Verdict:
    return max(verdicts, key=lambda v: _ORDER[v], default=Verdict.PASS)


def check_output(path: Path, name: str, kind: OutputKind, policy: Policy) -> FileCheck:
    """Every rule for one output file; the verdict is the worst finding's."""
    findings: list[dict[str, str]] = []
    extension = Path(name).suffix.lower()
    allowed = policy.allowed_extensions.get(kind.value, ())
    if extension not in allowed:
        findings.append(
            _finding(
                "file_type",
                Verdict.FAIL,
                f"{extension or 'no extension'} not allowed "
                f"for a {kind.value} (allowed: {', '.join(allowed)})",
            )
        )
        return _result(findings)
    size = path.stat().st_size
    detected = str(magic.from_file(str(path), mime=True)) if size else "application/x-empty"
    if detected not in _TYPES_BY_EXTENSION.get(extension, ()):
        findings.append(
            _finding("file_type", Verdict.FAIL, f"content is {detected}, not a {extension} file")
        )
        return _result(findings)
    findings.append(_finding("file_type", Verdict.PASS, detected))
    if size > MAX_CHECKED_BYTES:
        findings.append(_finding("size", Verdict.FAIL, "too large to be an aggregate output"))
        return _result(findings)
    if kind is OutputKind.TABLE and extension == ".csv":
        findings.extend(check_csv_table(path.read_bytes(), policy))
    elif kind is OutputKind.TABLE and extension == ".xlsx":
        findings.extend(check_xlsx_table(path, policy))
    elif kind is OutputKind.MODEL:
        findings.extend(check_model_text(path.read_text(errors="replace"), policy))
    else:
        findings.append(
            _finding("manual", Verdict.REVIEW, f"a {kind.value} ({extension}) is checked by people")
        )
    return _result(findings)


def _result(findings: list[dict[str, str]]) -> FileCheck:
    verdict = worst([Verdict(f["verdict"]) for f in findings])
    if len(findings) > MAX_FINDINGS_PER_FILE:
        more = len(findings) - MAX_FINDINGS_PER_FILE
        findings = findings[:MAX_FINDINGS_PER_FILE]
        findings.append(_finding("more", verdict, f"and {more} more findings"))
    return FileCheck(verdict, findings)


def _number(text: str) -> float | None:
    text = text.strip().replace(" ", "")
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def check_csv_table(data: bytes, policy: Policy) -> list[dict[str, str]]:
    """Rules for a CSV table with a header row (see the module's docstring)."""
    text = data.decode("utf-8-sig", errors="replace")
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    return check_table_rows(list(csv.reader(io.StringIO(text), dialect)), policy)


def check_xlsx_table(path: Path, policy: Policy) -> list[dict[str, str]]:
    """Every sheet of a workbook as a table (cached cell values; formulas are not evaluated)."""
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # a workbook openpyxl cannot read is for people to look at
        return [_finding("table", Verdict.REVIEW, f"workbook not readable: {type(exc).__name__}")]
    findings: list[dict[str, str]] = []
    try:
        for sheet in workbook.worksheets[:20]:
            rows = [
                ["" if cell is None else str(cell) for cell in row]
                for row in sheet.iter_rows(values_only=True, max_row=policy.max_table_rows + 2)
            ]
            for finding in check_table_rows(rows, policy):
                finding["detail"] = f"sheet {sheet.title[:40]}: {finding['detail']}"
                findings.append(finding)
    finally:
        workbook.close()
    return findings


def check_table_rows(rows: list[list[str]], policy: Policy) -> list[dict[str, str]]:
    """The table rules on rows of cells, the first row being the header."""
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        return [_finding("table", Verdict.REVIEW, "no header and data rows found")]
    header = [h.strip().lower() for h in rows[0]]
    body = rows[1:]
    identifiers = [h for h in header if h in policy.identifier_columns]
    if identifiers:
        return [
            _finding(
                "microdata",
                Verdict.FAIL,
                f"row-level identifier column(s): {', '.join(identifiers)}",
            )
        ]
    if len(body) > policy.max_table_rows:
        return [
            _finding(
                "microdata",
                Verdict.FAIL,
                f"{len(body)} rows: looks like row-level data (at most {policy.max_table_rows})",
            )
        ]
    if {"n", "total", "max1", "max2"} <= set(header):
        return _magnitude_rules(header, body, policy)
    return _frequency_rules(header, body, policy)


def _magnitude_rules(
    header: list[str], body: list[list[str]], policy: Policy
) -> list[dict[str, str]]:
    index = {name: header.index(name) for name in ("n", "total", "max1", "max2")}
    out: list[dict[str, str]] = []
    for number, row in enumerate(body, start=2):
        values = {k: _number(row[i]) if i < len(row) else None for k, i in index.items()}
        if any(v is None for v in values.values()):
            out.append(_finding("table", Verdict.REVIEW, f"row {number}: missing values"))
            continue
        n, total, max1, max2 = (float(values[k] or 0) for k in ("n", "total", "max1", "max2"))
        if n < policy.min_cell_count:
            out.append(
                _finding(
                    "min_cell_count",
                    Verdict.FAIL,
                    f"row {number}: {int(n)} contributors (< {policy.min_cell_count})",
                )
            )
        if total > 0:
            top = max1 + (max2 if policy.dominance_n >= 2 else 0)
            share = 100 * top / total
            if share > policy.dominance_k:
                out.append(
                    _finding(
                        "dominance",
                        Verdict.FAIL,
                        f"row {number}: top "
                        f"{policy.dominance_n} hold {share:.1f}% "
                        f"(> {policy.dominance_k:g}%)",
                    )
                )
            rest = total - max1 - max2
            if rest < policy.p_ratio / 100 * max1:
                out.append(
                    _finding(
                        "p_ratio",
                        Verdict.FAIL,
                        f"row {number}: the others hold "
                        f"less than {policy.p_ratio:g}% of the largest",
                    )
                )
    return out or [_finding("magnitude_table", Verdict.PASS, f"{len(body)} cells checked")]


def _frequency_rules(
    header: list[str], body: list[list[str]], policy: Policy
) -> list[dict[str, str]]:
    width = len(header)
    numeric_columns = [
        c
        for c in range(width)
        if all(_number(r[c]) is not None for r in body if c < len(r) and r[c].strip())
        and any(c < len(r) and r[c].strip() for r in body)
    ]
    if not numeric_columns:
        return [_finding("table", Verdict.REVIEW, "no numeric cells found")]
    out: list[dict[str, str]] = []
    checked = 0
    for number, row in enumerate(body, start=2):
        for c in numeric_columns:
            if c >= len(row):
                continue
            value = _number(row[c])
            if value is None:
                continue
            checked += 1
            where = f"row {number}, column {header[c] or c + 1}"
            if value != int(value) or value < 0:
                out.append(
                    _finding(
                        "non_count", Verdict.REVIEW, f"{where}: {row[c].strip()} is not a count"
                    )
                )
            elif value == 0:
                if policy.zeros_disclosive:
                    out.append(_finding("zero_cell", Verdict.FAIL, f"{where}: zero cell"))
            elif value < policy.min_cell_count:
                out.append(
                    _finding(
                        "min_cell_count",
                        Verdict.FAIL,
                        f"{where}: {int(value)} (< {policy.min_cell_count})",
                    )
                )
            elif policy.rounding_base > 1 and int(value) % policy.rounding_base:
                out.append(
                    _finding(
                        "rounding",
                        Verdict.REVIEW,
                        f"{where}: {int(value)} not rounded to base {policy.rounding_base}",
                    )
                )
    return out or [_finding("frequency_table", Verdict.PASS, f"{checked} cells checked")]


_DF = re.compile(
    r"(?:df\s*residuals|residual\s+degrees\s+of\s+freedom|df_resid)\s*[:=]?\s*(\d+)", re.I
)


def check_model_text(text: str, policy: Policy) -> list[dict[str, str]]:
    found = [int(m) for m in _DF.findall(text)]
    if not found:
        return [_finding("residual_df", Verdict.REVIEW, "residual degrees of freedom not found")]
    low = min(found)
    if low < policy.min_residual_df:
        return [
            _finding(
                "residual_df",
                Verdict.FAIL,
                f"{low} residual degrees of freedom (< {policy.min_residual_df})",
            )
        ]
    return [_finding("residual_df", Verdict.PASS, f"{low} residual degrees of freedom")]


# --- ACRO results ---------------------------------------------------------------------------------

ACRO_RESULTS = "results.json"
_ACRO_VERDICTS = {"pass": Verdict.PASS, "review": Verdict.REVIEW, "fail": Verdict.FAIL}


def acro_findings(files: dict[str, tuple[Path, str]]) -> dict[str, list[dict[str, str]]]:
    """Findings from ACRO's `finalise` folder when the request carries it: `files` maps each
    request path to (its frozen copy, its sha256).

    - `<dir>/results.json`: each output's ACRO status (pass/review/fail) and summary become
      findings on its files (`<dir>/<name>`); a file ACRO lists but the request lacks is a review
      finding on the results file; ACRO's own `DO_NOT_RELEASE` files fail;
    - `<dir>/checksums/<name>.txt`: ACRO's sha256 of `<dir>/<name>` must equal the frozen copy's,
      else that file fails (it is not what ACRO checked).
    """
    out: dict[str, list[dict[str, str]]] = {}

    def add(path: str, finding: dict[str, str]) -> None:
        out.setdefault(path, []).append(finding)

    for path, (frozen, _sha) in files.items():
        folder, _, name = path.rpartition("/")
        prefix = f"{folder}/" if folder else ""
        if name == ACRO_RESULTS:
            _acro_results(path, prefix, frozen, files, add)
        elif folder.endswith("checksums") and name.endswith(".txt"):
            base = folder[: -len("checksums")]
            target = f"{base}{name.removesuffix('.txt')}"
            if target in files:
                claimed = frozen.read_text(errors="replace").strip().lower()[:64]
                if claimed == files[target][1]:
                    add(target, _finding("acro_checksum", Verdict.PASS, "matches ACRO's sha256"))
                else:
                    add(
                        target,
                        _finding(
                            "acro_checksum", Verdict.FAIL, "differs from the file ACRO checked"
                        ),
                    )
    for path in files:
        if "DO_NOT_RELEASE" in path.rpartition("/")[2]:
            add(path, _finding("acro", Verdict.FAIL, "ACRO marks this file: do not release"))
    return out


def _acro_results(
    path: str,
    prefix: str,
    frozen: Path,
    files: dict[str, tuple[Path, str]],
    add: Callable[[str, dict[str, str]], None],
) -> None:
    try:
        data = json.loads(frozen.read_text())
        results = data["results"]
        assert isinstance(results, dict)
    except (ValueError, KeyError, TypeError, AssertionError, OSError):
        add(path, _finding("acro", Verdict.REVIEW, "results.json is not an ACRO results file"))
        return
    add(
        path,
        _finding(
            "acro",
            Verdict.PASS,
            f"ACRO {str(data.get('version', '?'))[:20]} results: {len(results)} outputs",
        ),
    )
    for uid, record in list(results.items())[:500]:
        if not isinstance(record, dict):
            continue
        verdict = _ACRO_VERDICTS.get(str(record.get("status")), Verdict.REVIEW)
        summary = str(record.get("summary", ""))[:300]
        exception = str(record.get("exception", ""))[:300]
        detail = f"ACRO {str(uid)[:40]}: {record.get('status')}; {summary}"
        if exception:
            detail += f"; exception asked: {exception}"
        for entry in record.get("files", []) or []:
            name = str(entry.get("name", "")) if isinstance(entry, dict) else ""
            target = f"{prefix}{name}"
            if target in files:
                add(target, _finding("acro", verdict, detail))
            elif name:
                add(
                    path,
                    _finding("acro", Verdict.REVIEW, f"{name} (ACRO {uid}) is not in the request"),
                )
