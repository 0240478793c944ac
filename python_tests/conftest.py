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


@pytest.fixture(autouse=True, scope="module")
def _one_thread(request):
    """Modules that set ``ONE_THREAD = True`` (small solver problems, tiny networks) run on
    one intra-op thread: on a busy 2-core machine two threads made their fits up to 10x
    slower through OpenMP stalls, and their results do not depend on it."""
    if not getattr(request.module, "ONE_THREAD", False):
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
