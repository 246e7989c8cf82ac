"""Where each word of the prompt steers the image: cross-attention maps, aggregated as DAAM does.

Every spatial transformer's cross-attention (attn2) gives each latent position a distribution over
the 77 text tokens, softmax(q k^T / sqrt(d)). Tang et al. 2022 ("What the DAAM", DAAM) upsample
each layer's map to the image size and sum over layers, heads and steps; a word's map is the sum
of its tokens' maps. We do the same.

The recorder never touches the computation that makes the image: forward hooks read each layer's
inputs and recompute the probabilities beside it (unet.CrossAttentionMaps; SDPA does not return
them), so images come out bit for bit the same with and without it (a test checks).

Legend: B batch, N = H*W latent positions at a layer, T tokens (77), h heads, d head dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..tokenizer import CLIPTokenizer
from ..unet import CrossAttentionMaps


class CrossAttentionRecorder:
    """Sums every cross-attention map of the conditional batch; `heat` is the DAAM map (B, T, H_img, W_img).

        with CrossAttentionRecorder(model.unet, prompts=1, size=(64, 64)) as recorder:
            images = last_images(txt2img(model, prompt, ...))
        recorder.heat  # (1, 77, 64, 64)

    prompts: how many prompts the run has. Under classifier-free guidance the UNet sees
    [unconditional; conditional] (2B rows); only the conditional rows are kept.
    Maps are summed at each layer's own resolution (`sums`, one entry per feature-map size) and
    upsampled once at the end: upsampling is linear, so this equals DAAM's upsample-then-sum.
    """

    def __init__(self, unet: torch.nn.Module, prompts: int, size: tuple[int, int]):
        self.prompts, self.size = prompts, size
        self.sums: dict[tuple[int, int], torch.Tensor] = {}  # (H, W) -> (B, T, H, W) summed probabilities
        self.calls: dict[tuple[int, int], int] = {}  # (H, W) -> layer calls recorded (layers x steps)
        self._maps = CrossAttentionMaps(unet, self._record)

    def __enter__(self) -> CrossAttentionRecorder:
        self._maps.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._maps.__exit__(*exc)

    @torch.no_grad()
    def _record(self, probs: torch.Tensor, shape: tuple[int, int]) -> None:
        rows = probs.shape[0]
        if rows not in (self.prompts, 2 * self.prompts):
            raise ValueError(f"the UNet ran {rows} rows for {self.prompts} prompts; which are conditional?")
        probs = probs[rows - self.prompts :]  # the conditional half, (B, N, T)
        maps = probs.transpose(1, 2).reshape(self.prompts, -1, *shape)  # (B, T, H, W)
        self.sums[shape] = self.sums[shape] + maps if shape in self.sums else maps
        self.calls[shape] = self.calls.get(shape, 0) + 1

    def heat_from(self, sizes: list[tuple[int, int]] | None = None) -> torch.Tensor:
        """The maps of the layers at `sizes` (default: all), upsampled to the image and summed: (B, T, H, W)."""
        sizes = list(self.sums) if sizes is None else sizes
        if not sizes:
            raise ValueError("no cross-attention was recorded (is the recorder around a UNet run?)")
        # Bicubic, as DAAM upsamples; it can overshoot a little below 0, which the clamp removes.
        up = [F.interpolate(self.sums[s], size=self.size, mode="bicubic", align_corners=False) for s in sizes]
        return torch.stack(up).sum(dim=0).clamp_min(0)

    @property
    def heat(self) -> torch.Tensor:
        return self.heat_from()


@dataclass
class Word:
    text: str  # as the tokenizer spells it back
    pieces: list[str]  # BPE pieces, "</w>" marking a word's end
    positions: list[int]  # token positions in the 77 (BOS is 0)


def words(tokenizer: CLIPTokenizer, prompt: str) -> list[Word]:
    """The prompt's words as CLIP reads them: runs of BPE pieces ending in "</w>".

    Only the tokens that fit CLIP's context (77 with BOS and EOS) are returned.
    """
    ids = tokenizer.encode(prompt)[: tokenizer.context_length - 2]
    out, pieces, positions = [], [], []
    for position, token_id in enumerate(ids, start=1):
        piece = tokenizer.decoder[token_id]
        pieces.append(piece)
        positions.append(position)
        if piece.endswith("</w>"):
            out.append(Word(tokenizer.decode(ids[positions[0] - 1 : position]), pieces, positions))
            pieces, positions = [], []
    if pieces:  # a word cut by the context length
        out.append(Word(tokenizer.decode(ids[positions[0] - 1 : positions[-1]]), pieces, positions))
    return out


def word_map(heat: torch.Tensor, word: Word) -> torch.Tensor:
    """One image's heat (T, H, W) -> the word's map (H, W): the sum over its tokens, as DAAM does."""
    return heat[word.positions].sum(dim=0)
