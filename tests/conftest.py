"""Shared test set-up: hypothesis profiles, the `cuda` marker, device parametrisation, RNG hygiene."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Profiles: `dev` (fast, default), `ci` (derandomised, no deadline; chosen when CI is set),
# `nightly` (thousands of examples). Select with HYPOTHESIS_PROFILE=...
settings.register_profile("dev", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
# `mutation`: few derandomised examples, for `make mutate` (thousands of mutants, each rerunning tests).
settings.register_profile("mutation", max_examples=12, deadline=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("nightly", max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

CUDA_AVAILABLE = torch.cuda.is_available()


def cpu_and_cuda():
    """Parametrise a test over "cpu" and (marked `cuda`, skipped without a GPU) "cuda"."""
    return pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])


def pytest_collection_modifyitems(config, items):
    if CUDA_AVAILABLE:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_rng_state():
    """Tests may seed freely: the global RNG state is restored afterwards."""
    cpu_state = torch.random.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if CUDA_AVAILABLE else None
    yield
    torch.random.set_rng_state(cpu_state)
    if cuda_state is not None:
        torch.cuda.set_rng_state_all(cuda_state)
