"""Object names: valid DNS-1123 labels for any input, and never one name for two inputs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import names
from orchestrator.names import DNS1123_LABEL, MAX_NAME_LENGTH, namespace_name, object_name

parts = st.lists(st.text(max_size=120), min_size=1, max_size=5)


def is_label(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and DNS1123_LABEL.fullmatch(name) is not None


@given(parts)
@settings(max_examples=500)
def test_object_name_is_dns1123_label_for_any_input(value: list[str]) -> None:
    assert is_label(object_name(*value))


@given(parts)
def test_object_name_is_deterministic(value: list[str]) -> None:
    assert object_name(*value) == object_name(*list(value))


@given(st.lists(parts, min_size=2, max_size=200, unique_by=tuple))
@settings(max_examples=200)
def test_object_name_distinct_inputs_give_distinct_names(values: list[list[str]]) -> None:
    assert len({object_name(*value) for value in values}) == len(values)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("Ab_c",), ("ab-c",)),
        (("ab-c",), ("ab--c",)),
        (("a", "b"), ("a-b",)),
        (("a", "b"), ("a", "", "b")),
        (("\ufb01le",), ("file",)),  # NFKC ligature
        (("\uff21\uff22\uff23",), ("abc",)),  # fullwidth letters
        (("straße",), ("strasse",)),
        (("x" * 100 + "1",), ("x" * 100 + "2",)),  # differ only past the cut
        (("-a-",), ("a",)),
    ],
)
def test_object_name_normalise_alike_inputs_differ(
    one: tuple[str, ...], other: tuple[str, ...]
) -> None:
    assert object_name(*one) != object_name(*other)
    assert is_label(object_name(*one))
    assert is_label(object_name(*other))


def test_object_name_keeps_a_readable_body() -> None:
    name = object_name("kluis", "Ab_C")

    assert name.startswith("kluis-ab-c-")
    assert len(name) == len("kluis-ab-c-") + names.HASH_LENGTH


@pytest.mark.parametrize("value", ["", "___", "ééé", "\u200b", "\x00", "😀" * 40])
def test_object_name_without_readable_characters_is_the_hash(value: str) -> None:
    name = object_name(value)

    assert is_label(name)
    assert len(name) == names.HASH_LENGTH


def test_object_name_long_input_is_cut_to_63() -> None:
    assert len(object_name("a" * 500, "b" * 500)) == MAX_NAME_LENGTH


def test_object_name_needs_a_part() -> None:
    with pytest.raises(ValueError, match="at least one part"):
        object_name()


def test_namespace_name_of_plain_code() -> None:
    assert namespace_name("12345") == "kluis-p-12345"


@given(st.text(max_size=80))
def test_namespace_name_is_dns1123_label(code: str) -> None:
    assert is_label(namespace_name(code))


@given(st.lists(st.text(max_size=20), min_size=2, max_size=50, unique=True))
def test_namespace_name_distinct_codes_give_distinct_namespaces(codes: list[str]) -> None:
    assert len({namespace_name(code) for code in codes}) == len(codes)


def test_volume_names_differ_between_projects() -> None:
    assert names.dataset_volume_name("10001", "GBA", "2024V1", 7) != names.dataset_volume_name(
        "10002", "GBA", "2024V1", 7
    )
    assert names.storage_volume_name("10001", "workspace") != names.storage_volume_name(
        "10002", "workspace"
    )
    assert names.home_volume_name("10001", "ann") != names.home_volume_name("10002", "ann")


def test_claim_names_are_labels_and_distinct() -> None:
    claims = [
        names.dataset_claim_name("GBA", "2024V1", 7),
        names.dataset_claim_name("GBA", "2024V1", 8),
        *(names.storage_claim_name(area) for area in ("workspace", "import", "export")),
        names.home_claim_name("ann"),
        names.home_claim_name("ann.b"),
        names.home_claim_name("ann_b"),
    ]

    assert all(is_label(claim) for claim in claims)
    assert len(set(claims)) == len(claims)


def test_project_labels_and_selector() -> None:
    labels = names.project_labels("12345", "namespace")

    assert labels == {
        "app.kubernetes.io/managed-by": "kluis",
        "app.kubernetes.io/part-of": "kluis",
        "app.kubernetes.io/component": "workspace",
        "kluis.io/project": "12345",
        "kluis.io/kind": "namespace",
    }
    assert names.project_selector("12345") == (
        "app.kubernetes.io/component=workspace,app.kubernetes.io/managed-by=kluis,"
        "app.kubernetes.io/part-of=kluis,kluis.io/project=12345"
    )
