"""The lessons' autoencoders and the one loop that trains them all.

Images travel flat, (B, 784) in [0, 1], so PCA and both autoencoders share one interface:
`encode` (B, 784) -> (B, code), `decode` (B, code) -> (B, 784).

Outputs are logistic and training minimises the cross-entropy between pixels and outputs, as in
both papers the lessons follow. With squared error instead, a logistic output pushed to 0 (the
black background most pixels are) has a vanishing gradient and can stay dark for good: small
runs of the convolutional autoencoder did exactly that. Cross-entropy's gradient on the logit is
output - pixel, which never vanishes while they differ.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from ..train.common import OptimConfig, lr_at, make_optimizer

SIDE = 28
PIXELS = SIDE * SIDE


class Autoencoder(nn.Module):
    """encoder: (B, 784) -> (B, code); decoder: (B, code) -> (B, 784) logits, images after a sigmoid."""

    encoder: nn.Sequential
    decoder: nn.Sequential

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class DenseAutoencoder(Autoencoder):
    """784-1000-500-250-code and its mirror image (Hinton & Salakhutdinov 2006, Science 313:504).

    As in the paper the code units are linear and the output units logistic. The paper needed RBM
    pretraining to train this depth; ReLU layers and Adam train it end to end from random weights.
    """

    def __init__(self, code_size: int = 2, widths: tuple[int, ...] = (1000, 500, 250)):
        super().__init__()
        sizes = (PIXELS, *widths)
        encoder = [layer for a, b in pairwise(sizes) for layer in (nn.Linear(a, b), nn.ReLU())]
        self.encoder = nn.Sequential(*encoder, nn.Linear(sizes[-1], code_size))
        back = sizes[::-1]  # (250, 500, 1000, 784)
        decoder = [layer for a, b in pairwise(back) for layer in (nn.ReLU(), nn.Linear(a, b))]
        self.decoder = nn.Sequential(nn.Linear(code_size, back[0]), *decoder)


class ConvAutoencoder(Autoencoder):
    """28x28 -> 14x14xC1 -> 7x7xC2 by stride-2 convolutions, then a linear map to the code; the
    decoder mirrors it with transposed convolutions. Far fewer weights than the dense one: each
    3x3 filter is shared across the image, the prior that suits pictures."""

    def __init__(self, code_size: int = 2, channels: tuple[int, int] = (32, 64)):
        super().__init__()
        c1, c2 = channels
        self.encoder = nn.Sequential(
            nn.Unflatten(1, (1, SIDE, SIDE)),
            nn.Conv2d(1, c1, 3, stride=2, padding=1), nn.ReLU(),   # (B, C1, 14, 14)
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(),  # (B, C2, 7, 7)
            nn.Flatten(), nn.Linear(c2 * 7 * 7, code_size),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Linear(code_size, c2 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (c2, 7, 7)),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ReLU(),  # (B, C1, 14, 14)
            nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1), nn.Flatten(),  # (B, 784)
        )  # fmt: skip


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_autoencoder(
    model: Autoencoder,
    images: torch.Tensor,
    epochs: int,
    batch_size: int = 128,
    lr: float = 3e-3,
    corrupt: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[float]:
    """Minimise the cross-entropy between model(corrupt(x)) and the clean x; the mean loss of each epoch.

    `corrupt` makes it a denoising autoencoder (Vincent et al. 2008): the input is damaged, the
    target is not. The optimizer and LR schedule are the trainers' (AdamW, warmup, cosine decay).
    lr 3e-3: in 10-epoch MNIST trials it beat 1e-3 for the dense autoencoder (codes of 2 and 32
    numbers) and the convolutional one alike. `log`, when given, gets one line per epoch.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    dev = next(model.parameters()).device
    steps_per_epoch = math.ceil(len(images) / batch_size)
    cfg = OptimConfig(lr=lr, warmup_steps=min(100, steps_per_epoch), max_steps=epochs * steps_per_epoch)
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(seed)  # the CPU draws order and noise: same run on any device
    model.train()
    losses, step = [], 0
    for epoch in range(epochs):
        total = 0.0
        for batch in images[torch.randperm(len(images), generator=generator)].split(batch_size):
            inputs = batch if corrupt is None else corrupt(batch, generator)
            logits = model.decoder(model.encode(inputs.to(dev)))
            loss = F.binary_cross_entropy_with_logits(logits, batch.to(dev))
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, step = total + loss.item() * len(batch), step + 1
        losses.append(total / len(images))
        if log is not None:
            log(f"  epoch {epoch + 1}/{epochs}: cross-entropy {losses[-1]:.5f}")
    model.eval()
    return losses


@torch.no_grad()
def encode_all(model: Autoencoder, images: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
    """(N, code) on the CPU, computed chunk by chunk on the model's device."""
    dev = next(model.parameters()).device
    return torch.cat([model.encode(part.to(dev)).cpu() for part in images.split(chunk)])


@torch.no_grad()
def reconstruct_all(model: Autoencoder, images: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
    """(N, 784) on the CPU: each image through the encoder and back out of the decoder."""
    dev = next(model.parameters()).device
    return torch.cat([model(part.to(dev)).cpu() for part in images.split(chunk)])
