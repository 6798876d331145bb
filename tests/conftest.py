import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_configure(config):
    # Two CPU cores: keep torch from oversubscribing them when pytest-xdist is not used.
    torch.set_num_threads(2)
