import os
import sys

# the benchmark modules import their size registry as a sibling module
sys.path.insert(0, os.path.dirname(__file__))

import gc  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import instant4d  # noqa: E402


@pytest.fixture(autouse=True)
def _peak_memory_per_benchmark():
    """extra_info's peak_mb is the largest memory allocated during one benchmark (its inputs and the CUDA
    graphs of its repeated calls included), not since the process started: earlier benchmarks' graphs
    are freed first."""
    if torch.cuda.is_available():
        instant4d.graphs.RASTERIZATION_GRAPHS.clear()
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    yield
