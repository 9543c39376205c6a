"""Shared set-ups of the privacy tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from memberwise.events.bulk import ingest_paths
from memberwise.runtime import Runtime

TAOBAO_NAME = "taobao_userbehavior_43users.csv"


def taobao_file() -> Path:
    """The 43-member Taobao sample in the project's shared data (found from any worktree)."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data" / TAOBAO_NAME
        if candidate.exists():
            return candidate
    pytest.skip(f"shared/data/{TAOBAO_NAME} is not on this machine")


def taobao_runtime(runtime: Runtime, tmp_path: Path) -> Runtime:
    """``runtime`` with the Taobao sample ingested into its lake."""
    result = ingest_paths(
        [taobao_file()], runtime.lake, fmt="taobao", deadletter_dir=tmp_path / "dead"
    )
    assert result.files[0].status == "ingested", result.files[0].error
    return runtime
