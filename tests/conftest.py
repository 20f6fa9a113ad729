import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# "ci" keeps the Triton-interpreter property tests inside CI's budget on 2 cores; "thorough" is for
# local hunting: HYPOTHESIS_PROFILE=thorough pytest tests/
settings.register_profile(
    "ci", max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def interpret_triton(monkeypatch):
    """Run Triton kernels on CPU tensors under the Triton interpreter for this test."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
