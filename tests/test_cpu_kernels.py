"""cpu_kernels: oneDNN Linear / packed Conv2d give PyTorch's results, and packing never loses a weight."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from latentdiff import cpu_kernels
from latentdiff.cpu_kernels import accelerate

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")

CONVS = [
    dict(in_channels=8, out_channels=16, kernel_size=3, padding=1),
    dict(in_channels=16, out_channels=16, kernel_size=3, stride=2, padding=0),  # the VAE's downsample
    dict(in_channels=16, out_channels=8, kernel_size=1),
    dict(in_channels=3, out_channels=32, kernel_size=4, stride=4, bias=False),  # a ViT patch embedding
    dict(in_channels=16, out_channels=16, kernel_size=3, padding=1, groups=4),
]


@pytest.mark.parametrize("kwargs", CONVS)
def test_packed_conv_equals_pytorch(kwargs):
    torch.manual_seed(0)
    plain = nn.Conv2d(**kwargs)
    fast = accelerate(copy.deepcopy(plain))
    x = torch.randn(2, kwargs["in_channels"], 12, 12)
    with torch.inference_mode():
        want = plain(x)
        assert type(fast) is cpu_kernels.Conv2d
        assert torch.allclose(fast(x), want, atol=1e-5)
        assert fast._packed is not None  # it took the oneDNN path
        other = torch.randn(1, kwargs["in_channels"], 16, 16)  # another input size: the same packed weight
        assert torch.allclose(fast(other), plain(other), atol=1e-5)


@pytest.mark.parametrize("shape", [(5, 24), (2, 7, 24), (2, 3, 4, 24)])
def test_onednn_linear_equals_pytorch(shape):
    torch.manual_seed(0)
    plain = nn.Linear(24, 40)
    fast = accelerate(copy.deepcopy(plain))
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.allclose(fast(x), plain(x), atol=1e-5)
        gelu = cpu_kernels.linear(x, plain.weight, plain.bias, "gelu")
        assert torch.allclose(gelu, torch.nn.functional.gelu(plain(x)), atol=1e-5)  # erf GELU, fused


def test_released_weights_come_back_exactly_for_saving_copying_training_and_casting():
    torch.manual_seed(0)
    net = accelerate(nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 4, 3, padding=1)), True)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        before = net(x)
    assert net[0].weight.numel() == 0 and net[2].weight.numel() == 0  # held once: packed only
    saved = net.state_dict()  # unpacks
    assert all(torch.equal(saved[k], v) for k, v in weights.items())
    with torch.no_grad():
        net(x)
    twin = copy.deepcopy(net)  # deepcopy (an EMA) unpacks too
    assert torch.equal(twin[0].weight, weights["0.weight"])
    with torch.no_grad():
        net(x)
    net(x).sum().backward()  # training: the plain path, on the restored weight
    assert net[0].weight.grad.shape == (8, 4, 3, 3)
    with torch.no_grad():
        net(x)
        net.double()  # casting unpacks first, then casts the whole weight
        assert net[0].weight.shape == (8, 4, 3, 3) and net[0].weight.dtype == torch.float64
        assert torch.allclose(net(x.double()).float(), before, atol=1e-5)  # float64: PyTorch's own path


def test_new_weights_are_repacked_and_disabling_gives_pytorch_bit_for_bit(monkeypatch):
    torch.manual_seed(0)
    conv = accelerate(nn.Conv2d(4, 4, 3, padding=1))
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        conv(x)
        conv.weight.mul_(2)  # an in-place update (an optimizer step): the packed copy is stale
        assert torch.allclose(conv(x), nn.functional.conv2d(x, conv.weight, conv.bias, padding=1), atol=1e-5)
        monkeypatch.setattr(cpu_kernels, "ENABLED", False)
        assert torch.equal(conv(x), nn.functional.conv2d(x, conv.weight, conv.bias, padding=1))
    reflect = accelerate(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    with torch.no_grad():
        assert torch.equal(reflect(x), nn.Conv2d.forward(reflect, x))  # other padding modes: PyTorch's path
