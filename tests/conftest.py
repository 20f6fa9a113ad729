import os

import torch

# Triton decides at decoration time (import) whether kernels are interpreted, so the switch must be
# set before instant4d's kernel modules are imported: on machines without CUDA every Triton kernel
# in the tests runs under the interpreter on CPU tensors.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings

# The interpret_triton fixture only sets an environment variable, so sharing it across examples is
# safe (hence function_scoped_fixture is suppressed).
# "ci" keeps the Triton-interpreter property tests inside CI's budget on 2 cores; "thorough" is for
# local hunting: HYPOTHESIS_PROFILE=thorough pytest tests/
settings.register_profile(
    "ci", max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
settings.register_profile("thorough", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def interpret_triton():
    """For tests that run Triton kernels on CPU tensors: needs Triton and the interpreter switch
    (set above for CPU-only machines)."""
    pytest.importorskip("triton")
    if not torch.cuda.is_available():
        assert os.environ.get("TRITON_INTERPRET") == "1", "TRITON_INTERPRET must be set before importing instant4d"
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
