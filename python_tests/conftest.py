import pytest
import torch


def pytest_configure(config):
    # `pytest -m cuda` selects every test that runs a CUDA kernel (mtlkernels.testing:
    # the "cuda" parameter of devices(), and the cuda_only / multi_gpu decorators).
    config.addinivalue_line("markers", "cuda: runs CUDA kernels (skipped without a GPU); select with -m cuda")


@pytest.fixture(autouse=True)
def _fixed_seed():
    """Every test starts from the same global seed (tests also use explicit generators)."""
    torch.manual_seed(0)
    yield
