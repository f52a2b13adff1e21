"""The one device resolution (fcnkit.utils.device) used by every job and experiment."""

import pytest
import torch
from torch import nn

from fcnkit.errors import InputError
from fcnkit.utils.device import model_device, resolve_device


def test_auto_and_cpu():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("bad", ["bogus", "meta", "gpu0"])
def test_unknown_devices_are_one_line_errors(bad):
    with pytest.raises(InputError, match="--device"):
        resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when no GPU is present")
def test_cuda_without_gpu_names_the_fix():
    with pytest.raises(InputError, match="no CUDA GPU is visible; use --device auto or --device cpu"):
        resolve_device("cuda")


def test_model_device_follows_the_parameters():
    assert model_device(nn.Conv2d(1, 1, 1)) == torch.device("cpu")
    assert model_device(nn.Identity()) == torch.device("cpu")
    assert model_device(nn.Conv2d(1, 1, 1), "cpu") == torch.device("cpu")
