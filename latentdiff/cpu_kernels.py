"""Exact fp32 CPU kernels: every Linear and Conv2d through oneDNN, convolution weights packed once.

Why this pays (benchmarks/cpu_kernels.py, results/cpu_kernels.md, on the 2-core AMD EPYC these machines have):
- PyTorch sends an fp32 `F.linear` to MKL's sgemm, which on AMD processors runs its AVX2 code
  (about 175 GFLOP/s here). oneDNN's inner product, `torch.ops.mkldnn._linear_pointwise`, uses the
  AVX-512 units the CPU has: SD 1.5's products run 1.7-2.3x faster.
- `F.conv2d` hands oneDNN the weight in PyTorch's plain layout, and oneDNN reorders it into its
  blocked layout on every call: for a 1280x1280x3x3 weight at an 8x8 latent that reorder costs
  more than the convolution (105 GFLOP/s instead of 297). Packing each weight once, and calling
  `torch.ops.mkldnn._convolution_pointwise` with it, removes that. (At 320 channels and 64x64 the
  two are within 10% of each other.)
Both are exact fp32 arithmetic (no reduced precision), differing from PyTorch's kernels only in
summation order (~1e-5 on a UNet's output).

`accelerate(model)` switches a model's Linear and Conv2d layers to these, in place (their weights and
state_dict stay as they are). They take the fast path only where it applies: inference (no
gradient wanted), on the CPU, in fp32, with oneDNN built in, and `ENABLED`; elsewhere they are plain
`nn.Linear` / `nn.Conv2d`. Set LATENTDIFF_ONEDNN=0 (or `cpu_kernels.ENABLED = False`) to compare.
"""

from __future__ import annotations

import os
import threading

import torch
import torch.nn.functional as F
from torch import nn

ENABLED = os.environ.get("LATENTDIFF_ONEDNN", "1") != "0"
_PACK_LOCK = threading.RLock()


def usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the oneDNN path applies: fp32 CPU inference (it has no backward)."""
    return (
        ENABLED
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and torch.backends.mkldnn.is_available()
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, post_op: str = "none") -> torch.Tensor:
    """x @ weight.T + bias, then `post_op` ("none" or "gelu": GELU with erf, as F.gelu), fused."""
    if usable(x, weight) and x.dim() >= 2 and x.shape[-1] > 0:
        algorithm = "none" if post_op == "gelu" else ""  # oneDNN's GELU "none" = the erf form
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, post_op, [], algorithm)
    y = F.linear(x, weight, bias)
    return F.gelu(y) if post_op == "gelu" else y


class Linear(nn.Linear):
    """nn.Linear through oneDNN's inner product (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class Conv2d(nn.Conv2d):
    """nn.Conv2d through oneDNN with the weight packed once into its blocked layout.

    The packed copy is a cache, not a parameter: it is rebuilt when the weight changes (an optimizer
    step or load_state_dict bumps the tensor's version) and never saved. With `release` (set by
    `accelerate(..., release=True)` for models that only run inference) the plain weight is freed
    once packed, so the weights are held once, not twice (2.2 GB of SD 1.5's 3.3 GB UNet are conv
    weights). Anything else that needs the plain weight (saving, `.to()`, training, the fallback
    path, a deepcopy) first unpacks it, exactly: packing only permutes the numbers."""

    release = False

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        with _PACK_LOCK:  # a server may run one model from several threads
            cached = getattr(self, "_packed", None)
            if getattr(self, "_released", False):
                return cached[1]
            # Inference tensors (made under torch.inference_mode) keep no version: their pointer has to do.
            key = (self.weight.data_ptr(), -1 if self.weight.is_inference() else self.weight._version)
            if cached is None or cached[0] != key:
                with torch.no_grad():
                    packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                        self.weight.detach().to_mkldnn(), list(self.padding), list(self.stride),
                        list(self.dilation), self.groups, list(x.shape),
                    )  # fmt: skip
                self._packed = cached = (key, packed)
                if self.release:
                    self.weight.data = torch.empty(0)  # the same Parameter object, now empty
                    self._released = True
            return cached[1]

    def unpack_(self) -> None:
        """Bring the plain weight back if `release` freed it (the packed copy is then dropped)."""
        with _PACK_LOCK:
            if getattr(self, "_released", False):
                self.weight.data = self._packed[1].to_dense()
                self._released = False
                self._packed = None

    def _fast(self, x: torch.Tensor) -> bool:
        return (
            usable(x, self.weight)
            and self.padding_mode == "zeros"
            and isinstance(self.padding, tuple)  # "same" / "valid" strings: the plain path
            and x.dim() == 4
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast(x):
            return torch.ops.mkldnn._convolution_pointwise(
                x, self._packed_weight(x), self.bias, list(self.padding), list(self.stride), list(self.dilation),
                self.groups, "none", [], "",
            )  # fmt: skip
        self.unpack_()
        return super().forward(x)

    # Every other way in to the weight unpacks it first.
    def _save_to_state_dict(self, *args, **kwargs):
        self.unpack_()
        return super()._save_to_state_dict(*args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self.unpack_()
        return super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, *args, **kwargs):
        self.unpack_()
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self) -> dict:  # copy.deepcopy (EMA) and pickle: the cache stays behind
        self.unpack_()
        return {k: v for k, v in self.__dict__.items() if k != "_packed"}


def accelerate(model: nn.Module, release: bool = False) -> nn.Module:
    """Switch every plain nn.Linear / nn.Conv2d in `model` to the classes above, in place.

    Only exact-type matches change (a subclass with its own forward keeps it); parameters, buffers
    and the state_dict are untouched, so this is invisible to saving, loading and training.
    `release`: hold conv weights only in packed form once used (see Conv2d)."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = Linear
        elif type(module) in (nn.Conv2d, Conv2d):
            module.__class__ = Conv2d
            module.release = release
    return model


__all__ = ["ENABLED", "Conv2d", "Linear", "accelerate", "linear", "usable"]
