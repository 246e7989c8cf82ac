"""Principal component analysis by the SVD: the best linear code of a given size, the autoencoders' baseline.

Centre the data, X - mean = U S V^T; the top-k rows of V^T are orthonormal directions of largest
variance. Projecting on them is the linear map with the least squared reconstruction error among
all rank-k maps (Eckart-Young), so any autoencoder that beats it does so by being non-linear.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class PCA(NamedTuple):
    mean: torch.Tensor  # (D,)
    components: torch.Tensor  # (k, D), orthonormal rows, largest variance first

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.components.T  # (N, k)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.components + self.mean  # (N, D)


def fit_pca(x: torch.Tensor, k: int) -> PCA:
    """The top-k principal directions of x (N, D)."""
    if not 1 <= k <= min(x.shape):
        raise ValueError(f"PCA code size must be in 1..{min(x.shape)} for data of shape {tuple(x.shape)}, got {k}")
    mean = x.mean(dim=0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)  # vh: (min(N, D), D)
    return PCA(mean, vh[:k])
