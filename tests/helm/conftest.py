"""Fixtures for the Helm chart's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.devcluster.build import ensure_built


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm binary built by orchestrator/devcluster/build.py (built on first use)."""
    return ensure_built() / "helm"
