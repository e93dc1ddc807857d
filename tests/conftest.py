"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    """Tests use tiny matrices: intra-op threads only add overhead (10× on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
