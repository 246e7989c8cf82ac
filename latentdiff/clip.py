"""CLIP: the text encoder that conditions the UNet, the image encoder, and the two together.

Mirrors transformers' `CLIPTextModel`, `CLIPVisionModel` and `CLIPModel` (state-dict keys identical,
transformers 5.x layout; text checkpoints on disk that carry the `text_model.` prefix load too).
Contrastive training (Radford et al. 2021): embed N images and their N captions, and train the
N x N cosine-similarity matrix, scaled by a learned temperature, to pick the diagonal both ways.

Legend: B batch, T tokens (77), P patches (+1 class token), D width, E joint embedding width,
h heads, d head dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import CLIPTextConfig, CLIPVisionConfig


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's sigmoid approximation of GELU; the SD 1.x text encoder was trained with it."""
    return x * torch.sigmoid(1.702 * x)


class CLIPAttention(nn.Module):
    def __init__(self, cfg: CLIPTextConfig | CLIPVisionConfig, causal: bool = True):
        super().__init__()
        D = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.causal = causal
        self.q_proj = nn.Linear(D, D)
        self.k_proj = nn.Linear(D, D)
        self.v_proj = nn.Linear(D, D)
        self.out_proj = nn.Linear(D, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        # (B, T, D) -> (B, h, T, d)
        q, k, v = (
            p(x).view(B, T, self.heads, D // self.heads).transpose(1, 2)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        # Causal in the text tower (GPT-like: each token sees only those before it), not in the ViT.
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # (B, h, T, d)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, D))


class CLIPMLP(nn.Module):
    def __init__(self, cfg: CLIPTextConfig | CLIPVisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = quick_gelu if cfg.hidden_act == "quick_gelu" else F.gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """Pre-LN transformer layer: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, cfg: CLIPTextConfig | CLIPVisionConfig, causal: bool = True):
        super().__init__()
        self.self_attn = CLIPAttention(cfg, causal)
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = CLIPMLP(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.token_embedding(input_ids) + self.position_embedding(positions)[None]  # (B, T, D)


class CLIPEncoder(nn.Module):
    def __init__(self, cfg: CLIPTextConfig | CLIPVisionConfig, causal: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(cfg, causal) for _ in range(cfg.num_hidden_layers))


@dataclass
class CLIPTextOutput:
    last_hidden_state: torch.Tensor  # (B, T, D), after the final layer norm
    hidden_states: tuple[torch.Tensor, ...]  # embeddings + each layer's output, before the final norm
    pooled: torch.Tensor  # (B, D), the final-normed state at the first EOS token


class CLIPTextModel(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = CLIPTextEmbeddings(cfg)
        self.encoder = CLIPEncoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.register_load_state_dict_pre_hook(_accept_disk_layout)

    def forward(self, input_ids: torch.Tensor) -> CLIPTextOutput:
        x = self.embeddings(input_ids)
        hidden_states = [x]
        for layer in self.encoder.layers:
            x = layer(x)
            hidden_states.append(x)
        last = self.final_layer_norm(x)
        B = input_ids.shape[0]
        if self.config.eos_token_id == 2:
            # Legacy transformers configs: the EOS id was wrong, so pool at the largest id instead.
            eos_at = input_ids.argmax(dim=-1)
        else:
            eos_at = (input_ids == self.config.eos_token_id).int().argmax(dim=-1)  # first EOS
        pooled = last[torch.arange(B, device=last.device), eos_at]
        return CLIPTextOutput(last, tuple(hidden_states), pooled)

    @staticmethod
    def normalize_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Accept both key layouts: transformers 5.x drops `text_model.`, checkpoints on disk carry it.

        Older checkpoints also store `embeddings.position_ids`, a buffer equal to arange(T); it is
        recomputed in forward, so it is checked and dropped rather than kept as state.
        """
        out = {k.removeprefix("text_model."): v for k, v in sd.items()}
        ids = out.pop("embeddings.position_ids", None)
        if ids is not None and not torch.equal(ids.flatten().long(), torch.arange(ids.numel())):
            raise ValueError(
                f"embeddings.position_ids is not 0..{ids.numel() - 1}: these weights expect other positions"
            )
        return out

    def encode(self, input_ids: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """The UNet's context: the output of `layer` (-1 last, -2 penultimate...) after the final norm."""
        out = self(input_ids)
        if layer == -1:
            return out.last_hidden_state
        return self.final_layer_norm(out.hidden_states[layer])


def _accept_disk_layout(module, state_dict, prefix, *_args) -> None:
    """load_state_dict pre-hook: rewrite the keys of `module` (under `prefix`) in place."""
    mine = {k[len(prefix) :]: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(prefix)]}
    state_dict.update({prefix + k: v for k, v in CLIPTextModel.normalize_state_dict(mine).items()})


class CLIPVisionEmbeddings(nn.Module):
    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        D, p = cfg.hidden_size, cfg.patch_size
        self.class_embedding = nn.Parameter(torch.randn(D))
        self.patch_embedding = nn.Conv2d(cfg.num_channels, D, kernel_size=p, stride=p, bias=False)
        self.position_embedding = nn.Embedding((cfg.image_size // p) ** 2 + 1, D)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # (B, P-1, D)
        cls = self.class_embedding.expand(pixels.shape[0], 1, -1)  # (B, 1, D)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight[None]  # (B, P, D)


class CLIPVisionModel(nn.Module):
    """ViT: patches + class token -> pre-LN transformer (no mask) -> pooled = LN(class token)."""

    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = CLIPVisionEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)  # sic: the reference's key
        self.encoder = CLIPEncoder(cfg, causal=False)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels (B, C, H, W), normalized -> (last hidden state (B, P, D), pooled (B, D))."""
        x = self.pre_layrnorm(self.embeddings(pixels))
        for layer in self.encoder.layers:
            x = layer(x)
        return x, self.post_layernorm(x[:, 0])


class CLIPModel(nn.Module):
    """Both towers, projected into one E-wide space, with the learned temperature."""

    def __init__(self, text: CLIPTextConfig, vision: CLIPVisionConfig, projection_dim: int = 512):
        super().__init__()
        self.text_model = CLIPTextModel(text)
        self.vision_model = CLIPVisionModel(vision)
        self.text_projection = nn.Linear(text.hidden_size, projection_dim, bias=False)
        self.visual_projection = nn.Linear(vision.hidden_size, projection_dim, bias=False)
        # log(1 / 0.07): the paper's initial temperature; exp() of it multiplies the cosines.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, E) unit vectors."""
        return F.normalize(self.text_projection(self.text_model(input_ids).pooled), dim=-1)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, E) unit vectors."""
        return F.normalize(self.visual_projection(self.vision_model(pixels)[1]), dim=-1)

    def forward(self, input_ids: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """logits_per_image (B_img, B_txt): scaled cosine similarity of every image with every text."""
        return self.logit_scale.exp() * self.encode_image(pixels) @ self.encode_text(input_ids).T


def contrastive_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy: image i should pick text i among all texts, and text i image i."""
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.T, labels)) / 2
