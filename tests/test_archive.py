"""Packing an archived project's storage and removing a deleted one's: the archive reads back
equal to its manifest, reruns after a crash at any step converge, and the live folder goes only
after the archive verified."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator import archive
from orchestrator.errors import Invalid

NOW = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
CODE = "12345"


def make_folder(root: Path) -> dict[str, bytes]:
    """A project folder like the reconciler makes, with files of several sizes and a link."""
    base = root / CODE
    files = {
        "workspace/analysis.py": b"print('hello')\n",
        "workspace/data/big.bin": os.urandom(3 * 1024 * 1024 + 17),  # more than one chunk
        "export/table.csv": b"a,b\n1,2\n",
        "home/alice/notes.txt": "naïve ünïcode\n".encode(),
        "import/empty.txt": b"",
    }
    for name, data in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (base / "home" / "bob").mkdir(parents=True)
    (base / "workspace" / "link").symlink_to("analysis.py")
    return files


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "projects", tmp_path / "archive"


def test_settle_archived_packs_verifies_and_removes_the_folder(roots: tuple[Path, Path]) -> None:
    storage, area = roots
    files = make_folder(storage)

    facts = archive.settle_archived(storage, area, CODE, NOW)

    tar_path, manifest_path = archive.archive_paths(area, CODE)
    assert facts.path == str(tar_path)
    assert facts.file_count == len(files)
    assert facts.content_bytes == sum(len(data) for data in files.values())
    assert facts.sha256 == hashlib.sha256(tar_path.read_bytes()).hexdigest()
    assert facts.size_bytes == tar_path.stat().st_size
    assert facts.manifest_sha256 == hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    manifest = json.loads(manifest_path.read_text())
    assert {entry["path"]: entry["sha256"] for entry in manifest["files"]} == {
        name: hashlib.sha256(data).hexdigest() for name, data in files.items()
    }
    assert manifest["archive"]["sha256"] == facts.sha256
    with tarfile.open(tar_path) as tar:
        extracted = tar.extractfile("workspace/data/big.bin")
        assert extracted is not None
        assert extracted.read() == files["workspace/data/big.bin"]
        assert tar.getmember("workspace/link").issym()
        assert tar.getmember("home/bob").isdir()
    assert not (storage / CODE).exists()
    assert set(area.iterdir()) == {tar_path, manifest_path}  # no partial file left
    assert {path.stat().st_mode & 0o777 for path in area.iterdir()} == {0o600}
    assert area.stat().st_mode & 0o777 == 0o700


def test_settle_archived_again_keeps_the_archive_and_repacks_nothing(
    roots: tuple[Path, Path],
) -> None:
    storage, area = roots
    make_folder(storage)
    first = archive.settle_archived(storage, area, CODE, NOW)
    tar_path, _ = archive.archive_paths(area, CODE)
    written = tar_path.stat().st_mtime_ns

    again = archive.settle_archived(storage, area, CODE, NOW, recorded=first)

    assert again == first
    assert tar_path.stat().st_mtime_ns == written


def test_crash_before_the_rename_leaves_a_partial_file_a_rerun_replaces(
    roots: tuple[Path, Path],
) -> None:
    storage, area = roots
    make_folder(storage)
    area.mkdir()
    tar_path, manifest_path = archive.archive_paths(area, CODE)
    partial = tar_path.with_name(tar_path.name + archive.PARTIAL_SUFFIX)
    partial.write_bytes(b"half a tar")  # the process died while writing

    facts = archive.settle_archived(storage, area, CODE, NOW)

    assert archive.verify_archive(tar_path, manifest_path) == facts
    assert not partial.exists()
    assert not (storage / CODE).exists()


def test_crash_between_tar_and_manifest_repacks_from_the_live_folder(
    roots: tuple[Path, Path],
) -> None:
    storage, area = roots
    make_folder(storage)
    tar_path, manifest_path = archive.archive_paths(area, CODE)
    archive.pack_project(storage / CODE, tar_path, manifest_path, CODE, NOW)
    manifest_path.unlink()  # the tar was renamed, the manifest never was

    facts = archive.settle_archived(storage, area, CODE, NOW)

    assert archive.verify_archive(tar_path, manifest_path) == facts
    assert not (storage / CODE).exists()


def test_crash_after_verifying_but_during_removal_finishes_the_removal(
    roots: tuple[Path, Path],
) -> None:
    storage, area = roots
    make_folder(storage)
    tar_path, manifest_path = archive.archive_paths(area, CODE)
    packed = archive.pack_project(storage / CODE, tar_path, manifest_path, CODE, NOW)
    (storage / CODE / "workspace" / "analysis.py").unlink()  # rmtree had begun

    facts = archive.settle_archived(storage, area, CODE, NOW)

    assert facts.sha256 == packed.sha256  # the verified archive counts, nothing repacked
    assert not (storage / CODE).exists()


def test_tampered_archive_is_repacked_while_the_folder_exists(roots: tuple[Path, Path]) -> None:
    storage, area = roots
    make_folder(storage)
    tar_path, manifest_path = archive.archive_paths(area, CODE)
    archive.pack_project(storage / CODE, tar_path, manifest_path, CODE, NOW)
    data = bytearray(tar_path.read_bytes())
    data[1024] ^= 0xFF  # one flipped byte inside the first file
    tar_path.write_bytes(bytes(data))
    with pytest.raises(archive.ArchiveMismatch):
        archive.verify_archive(tar_path, manifest_path)

    facts = archive.settle_archived(storage, area, CODE, NOW)

    assert archive.verify_archive(tar_path, manifest_path) == facts


def test_damaged_archive_without_its_folder_is_invalid_and_kept(roots: tuple[Path, Path]) -> None:
    storage, area = roots
    make_folder(storage)
    facts = archive.settle_archived(storage, area, CODE, NOW)
    tar_path, _ = archive.archive_paths(area, CODE)
    tar_path.write_bytes(tar_path.read_bytes()[:-2048])

    with pytest.raises(Invalid) as err:
        archive.settle_archived(storage, area, CODE, NOW, recorded=facts)

    assert "restore" in err.value.message
    assert tar_path.exists()


def test_recorded_archive_that_vanished_is_invalid(roots: tuple[Path, Path]) -> None:
    storage, area = roots
    make_folder(storage)
    facts = archive.settle_archived(storage, area, CODE, NOW)
    for path in archive.archive_paths(area, CODE):
        path.unlink()

    with pytest.raises(Invalid):
        archive.settle_archived(storage, area, CODE, NOW, recorded=facts)


def test_missing_folder_gives_an_empty_archive_that_says_so(roots: tuple[Path, Path]) -> None:
    storage, area = roots

    facts = archive.settle_archived(storage, area, CODE, NOW)

    assert facts.file_count == 0
    manifest = json.loads(Path(facts.manifest_path).read_text())
    assert manifest["source_present"] is False


def test_read_only_folders_are_still_removed(roots: tuple[Path, Path]) -> None:
    storage, area = roots
    make_folder(storage)
    (storage / CODE / "import").chmod(0o500)

    archive.settle_archived(storage, area, CODE, NOW)

    assert not (storage / CODE).exists()


def test_remove_project_data_removes_archive_and_leftovers_once(
    roots: tuple[Path, Path],
) -> None:
    storage, area = roots
    make_folder(storage)
    facts = archive.settle_archived(storage, area, CODE, NOW)
    (storage / CODE / "workspace").mkdir(parents=True)  # something recreated a folder
    (storage / CODE / "workspace" / "x").write_bytes(b"12345")

    removed = archive.remove_project_data(storage, area, CODE)
    again = archive.remove_project_data(storage, area, CODE)

    assert {(entry["kind"], entry["path"]) for entry in removed} == {
        ("archive", facts.path),
        ("manifest", facts.manifest_path),
        ("project folder", str(storage / CODE)),
    }
    assert [e["bytes"] for e in removed if e["kind"] == "archive"] == [facts.size_bytes]
    assert again == []
    assert list(area.iterdir()) == []
    assert not (storage / CODE).exists()


@pytest.mark.parametrize("code", ["", "..", "a/b", ".hidden"])
def test_codes_that_would_leave_the_roots_are_refused(code: str, tmp_path: Path) -> None:
    with pytest.raises(Invalid):
        archive.archive_paths(tmp_path, code)
    with pytest.raises(Invalid):
        archive.project_folder(tmp_path, code)


def test_certificate_digest_is_canonical() -> None:
    one = archive.certificate_digest({"b": 1, "a": [1, 2]})
    other = archive.certificate_digest({"a": [1, 2], "b": 1})

    assert one == other
    assert one != archive.certificate_digest({"a": [2, 1], "b": 1})


def test_archive_root_defaults_under_the_data_dir_and_is_configurable(tmp_path: Path) -> None:
    from orchestrator.config import Settings

    default = Settings(data_dir=tmp_path)
    chosen = Settings(data_dir=tmp_path, archive_root=Path("relative/archive"))

    assert default.effective_archive_root == tmp_path / "archive"
    assert chosen.effective_archive_root.is_absolute()  # resolved at start-up
    assert chosen.effective_archive_root.name == "archive"


def test_a_fifo_in_the_folder_is_refused_and_the_folder_kept(roots: tuple[Path, Path]) -> None:
    storage, area = roots
    make_folder(storage)
    os.mkfifo(storage / CODE / "workspace" / "pipe")

    with pytest.raises(Invalid) as err:
        archive.settle_archived(storage, area, CODE, NOW)

    assert "pipe" in err.value.message
    assert (storage / CODE / "workspace" / "analysis.py").exists()
    tar_path, manifest_path = archive.archive_paths(area, CODE)
    assert not tar_path.exists()
    assert not manifest_path.exists()
