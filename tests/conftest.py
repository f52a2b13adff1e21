"""Shared fixtures."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny ops on one thread: on a busy shared 2-core machine each op with 2 threads waits ~10 ms
    for the thread pool (measured: a tiny conv 12 ms vs 0.01 ms; ResNet-152 at 224 26 s vs under
    1 s). Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
