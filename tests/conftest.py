"""Shared fixtures: golden files (`pytest --update-goldens` rewrites them), an isolated
cache directory, and paths into the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SPECS = sorted((ROOT / "specs").glob("*.sw"))
# shipped specs that read a text file the user names (`text("input.txt")`)
BRING_TEXT = {"shakespeare", "progressive"}

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=100
)
# CI replays the same examples every run: a red build means a regression, never a new draw.
# Local runs draw fresh examples and keep finding new bugs.
settings.register_profile(
    "ci", parent=settings.get_profile("default"), derandomize=True, database=None
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


def pytest_addoption(parser):
    parser.addoption(
        "--update-goldens", action="store_true", help="rewrite golden files from actual output"
    )


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Parser tables and results are cached per user; tests use a cache of their own."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture
def golden(request):
    """`golden(path, actual)`: compare with the file, or rewrite it under --update-goldens."""
    update = request.config.getoption("--update-goldens")

    def check(path: Path, actual: str) -> None:
        if update or not path.exists():
            path.write_text(actual, encoding="utf-8")
            if not update:
                pytest.fail(f"golden file {path} was missing; written, review it and rerun")
        assert actual == path.read_text(encoding="utf-8"), f"differs from {path}"

    return check
