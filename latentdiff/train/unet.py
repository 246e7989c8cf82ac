"""Train the latent diffusion UNet, top to bottom (Rombach et al. 2022, section 3.3).

    latentdiff train unet --recipe recipes/unet_builtin.toml [--set optim.max_steps=2000] [--resume]

The VAE and the CLIP text tower come from finished `train vae` / `train clip` runs (or any
diffusers folder) and stay frozen. Both are run once over the whole pool before training:
- latents: the VAE posterior's mean and std per image (a fresh sample is drawn each step, as SD's
  training does), times `scaling_factor` = 1 / (their std), so the diffusion sees unit variance;
- text: the per-token states of the caption (B, 77, D), exactly what the UNet cross-attends to at
  sampling time, padding tokens included.
With `train_text = true` the text tower's transformer layers train with the UNet, as LDM trains its
text encoder jointly (Rombach et al. 2022, eq. 3): the captions' token ids are cached instead of
their states, and the tower runs on every batch. Its token and position embeddings stay frozen.
Per step: pick a batch, replace a `caption_dropout` share of the captions by the empty prompt (the
same network then also learns the unconditional model that classifier-free guidance needs), draw
t ~ U{0..T-1} and eps ~ N(0, I), noise the latents to x_t, and regress the UNet's output on eps
(or on v = sqrt(a) eps - sqrt(1 - a) x0, Salimans & Ho 2022) with a mean squared error.
At the end the EMA UNet is assembled with the frozen parts into `<out>/model`, a diffusers folder.
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from ..clip import CLIPModel, CLIPTextModel
from ..config import CLIPTextConfig, CLIPVisionConfig, SchedulerConfig, SDConfig, UNetConfig, VAEConfig
from ..model import StableDiffusion
from ..pipeline import last_images, txt2img
from ..schedules import alphas_cumprod, q_sample
from ..tokenizer import CLIPTokenizer
from ..unet import CrossAttentionMaps, UNet2DConditionModel
from ..vae import AutoencoderKL
from .common import DataConfig, OptimConfig, RecipeError, device, fit, load_last_checkpoint, pool_tensors, shard
from .grid import save_grid
from .grounding import grounding_loss, grounding_targets
from .layout import IGNORE, LayoutHead, labelled, layout_loss, layout_targets

PREVIEW_PROMPTS = (
    "a red circle above a blue square",
    "a large yellow triangle on a black background",
    "a small green square to the left of a pink circle",
    "a purple circle",
    "a cyan triangle below a large orange square on a white background",
    "a blue square to the right of a small red triangle",
    "a large pink circle on a black background",
    "a green triangle",
)


def _unet() -> UNetConfig:
    # Sized for the 2-core CPU: ~7M parameters, about 10 ms per guided step at 8x8 latents there.
    return UNetConfig(
        sample_size=8,
        block_out_channels=(64, 128, 128),
        down_block_types=("CrossAttnDownBlock2D",) * 3,
        up_block_types=("CrossAttnUpBlock2D",) * 3,
        layers_per_block=1,
        cross_attention_dim=128,
        num_heads=None,
        head_dim=32,
    )


def _scheduler() -> SchedulerConfig:
    # DDPM's linear schedule: alpha_bar at T is 4e-5 (SD's scaled_linear leaves 5e-3 of the signal,
    # enough at 8x8 for the mean colour to leak through the "pure noise" a sampler starts from).
    return SchedulerConfig(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


@dataclasses.dataclass
class UNetRecipe:
    model: UNetConfig = dataclasses.field(default_factory=_unet)
    scheduler: SchedulerConfig = dataclasses.field(default_factory=_scheduler)
    vae: str = "runs/vae_shapes"  # a `train vae` run folder or a diffusers folder
    clip: str = "runs/clip_shapes"  # a `train clip` run folder (its text tower) or a diffusers folder
    # Which weights of a run folder: "ema" or "raw". A short run's EMA still leans on its random
    # init (0.999 ** 1000 = 0.37), so there the last raw weights can be the better ones.
    vae_weights: str = "ema"
    clip_weights: str = "ema"
    caption_dropout: float = 0.1
    # Weight of the token grounding loss (grounding.py; shapes captions only); 0 trains on denoising alone.
    grounding_weight: float = 0.0
    # Ground only layers at least this many latent cells wide (a 2x2 map cannot outline a 12-pixel
    # object), and only timesteps below grounding_max_t (near pure noise there is no object to find).
    grounding_min_side: int = 1
    grounding_max_t: int = 1000
    init_from: str = ""  # a `train unet` run folder (its EMA) or a diffusers folder whose UNet starts this run
    # Train the text tower's layers with the UNet (TextAndUNet). A contrastive CLIP trained on shapes reads
    # captions nearly as bags of words: its padding states for "a red circle above a blue square" and
    # "... below ..." have cosine 0.9993 (benchmarks/text_relations.py), so the UNet hardly sees which
    # object goes on top. (8,000 steps of this on the built-in model did not change that: 0.9998.)
    # To continue such a run, point both `clip` and `init_from` at its model folder.
    train_text: bool = False
    # Weight of the layout loss on the training text tower (layout.py; needs train_text and shapes
    # captions): its end and padding states must name which object goes first along the relation's axis.
    layout_weight: float = 0.0
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    batch_size: int = 64
    log_every: int = 50
    ckpt_every: int = 500
    out: str = "runs/unet"


# --- the frozen parts --------------------------------------------------------------------------------


def _run_or_folder(path: str, what: str, command: str, weights: str = "ema"):
    """(checkpoint recipe, weights) of a training run, or the StableDiffusion in a diffusers folder."""
    if weights not in ("ema", "raw"):
        raise RecipeError(f"{what} weights must be ema or raw, got {weights!r}")
    folder = Path(path)
    if (folder / "model_index.json").exists():
        from ..weights import load

        return load(folder)
    checkpoint = load_last_checkpoint(folder)
    if checkpoint is None:
        raise RecipeError(f"{path}: no trained {what} there (make one with: {command})")
    return checkpoint["recipe"], checkpoint["ema" if weights == "ema" else "model"]


def frozen_vae(path: str, weights: str = "ema") -> AutoencoderKL:
    found = _run_or_folder(path, "VAE", "latentdiff train vae --recipe recipes/vae_builtin.toml", weights)
    if isinstance(found, StableDiffusion):
        return found.vae.eval().requires_grad_(False)
    recipe, ema = found
    vae = AutoencoderKL(VAEConfig(**recipe["model"]))
    vae.load_state_dict(ema)
    return vae.eval().requires_grad_(False)


def frozen_text_encoder(path: str, weights: str = "ema") -> CLIPTextModel:
    found = _run_or_folder(path, "CLIP", "latentdiff train clip --recipe recipes/clip_builtin.toml", weights)
    if isinstance(found, StableDiffusion):
        return found.text_encoder.eval().requires_grad_(False)
    recipe, ema = found
    text = CLIPTextModel(CLIPTextConfig(**recipe["text"]))
    text.load_state_dict({k.removeprefix("text_model."): v for k, v in ema.items() if k.startswith("text_model.")})
    return text.eval().requires_grad_(False)


def _init_unet(path: str) -> dict:
    found = _run_or_folder(path, "UNet", "latentdiff train unet --recipe recipes/unet_builtin.toml")
    return found.unet.state_dict() if isinstance(found, StableDiffusion) else split_states(found[1])[0]


class TextAndUNet(torch.nn.Module):
    """The UNet and the text tower it reads, trained as one model (recipe.train_text).

    Called like the UNet but with token ids (B, 77) for the context, so the tower's gradient flows.
    Only the tower's transformer layers and final norm train: the embeddings (6.3M of the built-in
    tower's 7.1M weights, almost all of them rows of words the captions never use) stay as they are.
    With `layout` it also carries the layout loss's head (layout.py), which trains but never ships.
    """

    def __init__(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, layout: bool = False):
        super().__init__()
        self.unet, self.text_encoder = unet, text_encoder
        self.layout_head = LayoutHead(text_encoder.config.hidden_size) if layout else None
        text_encoder.requires_grad_(False)
        text_encoder.encoder.requires_grad_(True)
        text_encoder.final_layer_norm.requires_grad_(True)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, input_ids: torch.Tensor, with_layout: bool = False):
        """The UNet's output; with_layout: (that, the layout head's logits (B, 77, 2, classes))."""
        states = self.text_encoder.encode(input_ids)
        out = self.unet(x_t, t, states)
        return (out, self.layout_head(states)) if with_layout else out


def split_states(state: dict) -> tuple[dict, dict | None]:
    """(UNet state, text tower state or None) of a trained model's state: a UNet's, or a TextAndUNet's
    (whose layout head, a training aid only, is left out)."""
    if not any(k.startswith("text_encoder.") for k in state):
        return state, None
    parts = {"unet.": {}, "text_encoder.": {}}
    for k, v in state.items():
        prefix = next((p for p in parts if k.startswith(p)), None)
        if prefix is not None:
            parts[prefix][k.removeprefix(prefix)] = v
    return parts["unet."], parts["text_encoder."]


def trained_clip(path: str, weights: str = "ema") -> CLIPModel | None:
    """The whole CLIP of a `train clip` run, or of a diffusers folder that carries one (else None)."""
    found = _run_or_folder(path, "CLIP", "latentdiff train clip --recipe recipes/clip_builtin.toml", weights)
    if isinstance(found, StableDiffusion):
        from ..weights.clip_folder import has_clip, load_clip

        return load_clip(path) if has_clip(path) else None
    recipe, sd = found
    clip = CLIPModel(CLIPTextConfig(**recipe["text"]), CLIPVisionConfig(**recipe["vision"]), recipe["projection_dim"])
    clip.load_state_dict(sd)
    return clip.eval()


@torch.no_grad()
def encode_pool(vae, text_encoder, images: torch.Tensor, captions: list[str], chunk: int = 256):
    """The latent posterior (mean, std) of every image and the text context of every caption: its
    states (N, 77, D), or with text_encoder None its token ids (N, 77), for a tower that trains."""
    tokenizer = CLIPTokenizer.default()

    def context(texts: list[str]) -> torch.Tensor:
        ids = tokenizer(texts).input_ids
        return ids if text_encoder is None else text_encoder.encode(ids)

    means, stds, contexts = [], [], []
    for start in range(0, len(images), chunk):
        posterior = vae.encode(images[start : start + chunk])
        means.append(posterior.mean)
        stds.append(posterior.std)
        contexts.append(context(captions[start : start + chunk]))
    return torch.cat(means), torch.cat(stds), torch.cat(contexts), context([""])


def latent_scale(means: torch.Tensor, stds: torch.Tensor) -> float:
    """1 / std of the latents the diffusion sees (SD measured 0.18215 for its VAE the same way)."""
    samples = means + stds * torch.randn(means.shape, generator=torch.Generator().manual_seed(0))
    return float(1 / samples.std())


def assemble(recipe: UNetRecipe, state: dict, vae, text_encoder, scale: float) -> StableDiffusion:
    """The frozen VAE and text tower with a trained UNet (or a trained TextAndUNet's state, whose own
    text tower then replaces the frozen one): one StableDiffusion, ready to sample or save."""
    unet_state, text_state = split_states(state)
    config = SDConfig(
        text=text_encoder.config,
        vae=dataclasses.replace(vae.config, scaling_factor=scale),
        unet=recipe.model,
        scheduler=recipe.scheduler,
    )
    model = StableDiffusion(config)
    model.text_encoder.load_state_dict(text_encoder.state_dict() if text_state is None else text_state)
    model.vae.load_state_dict(vae.state_dict())
    model.unet.load_state_dict(unet_state)
    return model.eval()


# --- training ------------------------------------------------------------------------------------------


def denoising_loss(net, x0: torch.Tensor, context: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                   alpha_bar: torch.Tensor, prediction_type: str,
                   weights: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """MSE between the UNet's output at x_t = q_sample(x0, t, eps) and what it should predict there;
    `weights` (B,) weighs each sample's mean squared error."""
    x_t = q_sample(x0, t, eps, alpha_bar)
    if prediction_type == "epsilon":
        target = eps
    elif prediction_type == "v_prediction":
        a = alpha_bar[t].view(-1, *([1] * (x0.ndim - 1)))  # images (B, C, H, W) or videos (B, C, F, H, W)
        target = a.sqrt() * eps - (1 - a).sqrt() * x0
    else:
        target = x0
    if weights is None:
        return F.mse_loss(net(x_t, t, context), target)
    per_sample = (net(x_t, t, context) - target).square().flatten(1).mean(1)
    return (weights * per_sample).mean()


@dataclasses.dataclass
class Setup:
    """Everything a run needs before its first step: the UNet, the loss, the frozen parts, the caches."""

    model: UNet2DConditionModel | TextAndUNet
    loss_fn: object  # loss_fn(net, rank, world), as common.fit calls it
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    scale: float
    device: torch.device


def setup(recipe: UNetRecipe) -> Setup:
    torch.manual_seed(recipe.data.seed)
    dev = device()
    text_encoder = frozen_text_encoder(recipe.clip, recipe.clip_weights)
    if recipe.model.cross_attention_dim != text_encoder.config.hidden_size:
        raise RecipeError(
            f"model.cross_attention_dim {recipe.model.cross_attention_dim} must equal the text tower's width "
            f"{text_encoder.config.hidden_size} ({recipe.clip})"
        )
    vae = frozen_vae(recipe.vae, recipe.vae_weights)
    if recipe.model.in_channels != vae.config.latent_channels:
        raise RecipeError(f"model.in_channels {recipe.model.in_channels} != the VAE's {vae.config.latent_channels}")
    images, captions = pool_tensors(recipe.data)
    # states: (N, 77, D) text states, or (N, 77) token ids when the tower trains (then so is `empty`)
    means, stds, states, empty = encode_pool(vae, None if recipe.train_text else text_encoder, images, captions)
    del images  # only the latents are needed from here
    scale = latent_scale(means, stds)
    means, stds, states, empty = (t.to(dev) for t in (means, stds, states, empty))
    alpha_bar = alphas_cumprod(recipe.scheduler).float().to(dev)
    T = recipe.scheduler.num_train_timesteps
    unet = UNet2DConditionModel(recipe.model)
    if recipe.init_from:
        unet.load_state_dict(_init_unet(recipe.init_from))
    layout = None
    if recipe.layout_weight > 0:
        if not recipe.train_text or recipe.data.source != "shapes":
            raise RecipeError('layout_weight needs train_text = true and shapes captions (data.source = "shapes")')
        layout = layout_targets(recipe.data, extra_rows=len(captions) - recipe.data.pool).to(dev)
    model = TextAndUNet(unet, copy.deepcopy(text_encoder), layout is not None) if recipe.train_text else unet
    model = model.to(dev)
    grounding = None
    if recipe.grounding_weight > 0:
        if recipe.data.source != "shapes":
            raise RecipeError('grounding_weight needs shapes captions (data.source = "shapes")')
        positions, masks = grounding_targets(recipe.data, CLIPTokenizer.default(), means.shape[-1],
                                             extra_rows=len(captions) - recipe.data.pool)  # fmt: skip
        grounding = (positions.to(dev), masks.to(dev))

    def loss_fn(net, rank: int, world: int) -> torch.Tensor:
        B = recipe.batch_size  # every random number is drawn for the global batch, then sharded
        idx, t = torch.randint(len(means), (B,)), torch.randint(T, (B,))
        drop = torch.rand(B) < recipe.caption_dropout
        eps, latent_noise = torch.randn(B, *means.shape[1:]), torch.randn(B, *means.shape[1:])
        whole = idx.to(dev), t.to(dev), drop.to(dev)  # the global batch, for the auxiliary losses' counts
        idx, t, drop, eps, latent_noise = (shard(x, rank, world).to(dev) for x in (idx, t, drop, eps, latent_noise))
        x0 = (means[idx] + stds[idx] * latent_noise) * scale
        context = torch.where(drop.view(-1, *[1] * (states.ndim - 1)), empty, states[idx])
        forward, logits, maps = net, [], []
        if layout is not None:  # the same forward pass also gives the layout head's logits

            def forward(x_t, t, ids):
                out, layout_logits = net(x_t, t, ids, with_layout=True)
                logits.append(layout_logits)
                return out

        # The grounding loss reads the cross-attention maps of that same pass.
        capture = CrossAttentionMaps(unet, lambda probs, hw: maps.append((probs, hw)))
        capture = capture if grounding is not None else nullcontext()
        with capture:
            loss = denoising_loss(forward, x0, context, t, eps, alpha_bar, recipe.scheduler.prediction_type)
        # Each auxiliary loss is a mean over what this shard holds (labelled states, grounded words),
        # so it is normalised by the global batch's count instead: DDP's average is then exact.
        if layout is not None:
            end_id = text_encoder.config.eos_token_id

            def layout_batch(idx, drop):
                ids = torch.where(drop.view(-1, 1), empty, states[idx])
                return ids, torch.where(drop.view(-1, 1), IGNORE, layout[idx])  # a dropped caption names nothing

            count = labelled(*layout_batch(whole[0], whole[2]), end_id).sum().item() / world
            loss = loss + recipe.layout_weight * layout_loss(logits[0], *layout_batch(idx, drop), end_id, count)
        if grounding is not None:

            def grounded(idx, t, drop):
                skip = drop | (t >= recipe.grounding_max_t)  # a dropped caption has no words to ground
                return torch.where(skip.view(-1, 1), -1, grounding[0][idx])

            count = (grounded(*whole) >= 0).sum().item() / world
            maps = [(probs, hw) for probs, hw in maps if min(hw) >= recipe.grounding_min_side]
            positions = grounded(idx, t, drop)
            loss = loss + recipe.grounding_weight * grounding_loss(maps, positions, grounding[1][idx], count)
        return loss

    return Setup(model, loss_fn, vae.to(dev), text_encoder.to(dev), scale, dev)


def train(recipe: UNetRecipe, resume: bool = False, stop_at: int | None = None, quiet: bool = False) -> dict:
    run = setup(recipe)

    def preview(step: int, ema_state: dict) -> None:  # the EMA model on fixed prompts and seeds
        sd = assemble(recipe, ema_state, run.vae, run.text_encoder, run.scale).to(run.device)
        images = last_images(txt2img(sd, list(PREVIEW_PROMPTS), steps=20, guidance_scale=4.0, seed=0))
        save_grid(images * 2 - 1, Path(recipe.out) / "samples" / f"step-{step:08d}.png", columns=len(PREVIEW_PROMPTS))

    result = fit(run.model, run.loss_fn, recipe, resume, stop_at, quiet, on_checkpoint=preview)
    result["sd"] = assemble(recipe, result["ema"].shadow, run.vae, run.text_encoder, run.scale)
    result["raw_sd"] = assemble(recipe, run.model.state_dict(), run.vae, run.text_encoder, run.scale)
    return result
