"""Test-wide settings: an isolated cache, loopback-only Ray, small thread pools."""

from __future__ import annotations

import os

import pytest
import torch

# Ray binds 127.0.0.1 only and phones nowhere (see README, "Running on a Ray cluster").
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    """Every test session gets its own AUTOPRUNE_HOME, so no test reads a cache it did not write."""
    home = tmp_path_factory.mktemp("autoprune-home")
    previous = os.environ.get("AUTOPRUNE_HOME")
    os.environ["AUTOPRUNE_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("AUTOPRUNE_HOME", None)
    else:
        os.environ["AUTOPRUNE_HOME"] = previous
