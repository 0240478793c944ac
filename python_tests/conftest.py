import pytest
import torch


@pytest.fixture(autouse=True)
def _fixed_seed():
    """Every test starts from the same global seed (tests also use explicit generators)."""
    torch.manual_seed(0)
    yield
