"""`latentdiff explain`: every picture of the lectures from one real run, as PNGs and one HTML page.

    report = explain(model, ExplainSettings(prompt="a red circle above a blue square"), Path("explain"))

Sections: the prompt's tokens; the denoising trajectory (x_t, predicted noise, predicted x0 per
step, as a strip, a GIF and an MP4) with the sampler's noise schedule; per-word cross-attention;
the same seed at several guidance scales; two prompts one word apart; forward diffusion. Every
figure is computed before the first file is written, and each file is written atomically, so a run
that fails never leaves a half-written file.
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from PIL import Image

from .. import figures
from ..animation import write_gif, write_mp4
from ..images import save_png
from ..model import StableDiffusion
from ..pipeline import sampling_schedule
from ..weights.io import atomic_path, write_json
from .attention import Word, word_map, words
from .forward import noise_image
from .guidance import cfg_sweep, default_swap, divergence, swap_word
from .trajectory import Trajectory, decode, fit_preview, preview, record

TILE = 128  # pixels per image tile in the figures
STRIP_COLUMNS = 8  # steps shown in the trajectory strips (the GIF shows them all)


@dataclass
class ExplainSettings:
    prompt: str
    seed: int = 0
    steps: int = 20
    sampler: str = "euler"
    guidance_scale: float = 7.5
    negative_prompt: str = ""
    scales: tuple[float, ...] = (1.0, 3.0, 7.5, 15.0)
    swap: str | None = None  # "OLD=NEW" for the prompt pair; None picks a colour swap when it can
    timesteps: tuple[int, ...] = (0, 100, 250, 500, 750, 999)
    image: torch.Tensor | None = field(default=None, repr=False)  # (3, H, W) for forward diffusion
    mp4: bool = True


@dataclass
class Report:
    folder: Path
    files: list[Path]
    numbers: dict


def explain(model: StableDiffusion, settings: ExplainSettings, out: Path,
            say: Callable[[str], None] = lambda line: None) -> Report:  # fmt: skip
    """Run everything, then write out/report.html, the PNGs, denoising.gif/.mp4 and explain.json."""
    s = settings
    swap = s.swap if s.swap is not None else default_swap(s.prompt)
    if swap is not None:
        swap_word(s.prompt, swap)  # a bad --swap fails here, before minutes of sampling
    start = time.perf_counter()
    say(f"denoising {s.prompt!r} with attention recorded ({s.steps} {s.sampler} steps)")
    run = record(model, s.prompt, s.seed, s.steps, s.sampler, s.guidance_scale, s.negative_prompt)
    weights = fit_preview(run.x_t[-1], run.image)
    shown = _spread(s.steps, STRIP_COLUMNS)
    x_t_images = decode(model, run.x_t)
    x0_images = decode(model, run.x0)
    eps_images = preview(run.eps, weights, normalise=True)
    trajectory_png = _trajectory_figure(run, shown, x_t_images, x0_images, eps_images, weights)
    frames = _frames(run, x_t_images, x0_images, eps_images)
    schedule_png = _schedule_figure(model, s)

    say("cross-attention maps per word")
    tokens = words(model.tokenizer, s.prompt)
    attention_png, attention_numbers = _attention_figure(run, tokens)

    say(f"guidance scales {', '.join(f'{g:g}' for g in s.scales)}")
    sweep = cfg_sweep(model, s.prompt, list(s.scales), s.seed, s.steps, s.sampler, s.negative_prompt)
    guidance_png = figures.labelled_grid([(f"seed {s.seed}", [figures.to_image(i, TILE) for i in sweep])],
                                         [f"CFG {g:g}" for g in s.scales])  # fmt: skip
    pair_png, pair_numbers = None, None
    if swap is not None:
        say(f"prompt pair: {swap}")
        # The first of the pair is `run` itself: recording attention left it bit-identical.
        other = record(model, swap_word(s.prompt, swap), s.seed, s.steps, s.sampler, s.guidance_scale,
                       s.negative_prompt, attention=False)  # fmt: skip
        pair_png, pair_numbers = _pair_figure(model, run, other, shown)

    say(f"forward diffusion at t = {', '.join(map(str, s.timesteps))}")
    source = s.image if s.image is not None else run.image
    _, noised = noise_image(model, source, s.prompt, list(s.timesteps), s.seed)
    forward_png = _forward_figure(model, noised, weights)

    numbers = {
        "prompt": s.prompt,
        "settings": {f.name: getattr(s, f.name) for f in fields(s) if f.name != "image"} | {"swap": swap},
        "sigmas": [round(float(v), 5) for v in run.sigmas],
        "tokens": [{"word": w.text, "pieces": w.pieces, "positions": w.positions} for w in tokens],
        "attention": attention_numbers,
        "prompt_pair": pair_numbers,
        "forward": [{"t": e.t, "alpha_bar": round(e.alpha_bar, 5), "eps_mse": round(e.mse, 5)} for e in noised],
        "forward_image": "given" if s.image is not None else "the generated image",
        "seconds": round(time.perf_counter() - start, 2),
    }
    figures_by_name = {"trajectory": trajectory_png, "schedule": schedule_png, "attention": attention_png,
                       "guidance": guidance_png, "pair": pair_png, "forward": forward_png}  # fmt: skip
    return _write(out, figures_by_name, frames, numbers, s, run)


# --- figures ------------------------------------------------------------------------------------


def _spread(steps: int, n: int) -> list[int]:
    """Up to n step indices, evenly spread from the first step to the last."""
    if steps <= n:
        return list(range(steps))
    return sorted({round(i * (steps - 1) / (n - 1)) for i in range(n)})


def _tiles(images: torch.Tensor, indices: list[int]) -> list[Image.Image]:
    return [figures.to_image(images[i], TILE) for i in indices]


def _trajectory_figure(run: Trajectory, shown, x_t_images, x0_images, eps_images, weights) -> Image.Image:
    titles = [f"step {i + 1}: sigma {float(run.sigmas[i]):.3g}" for i in shown]
    rows = [
        ("x_t (VAE)", _tiles(x_t_images, shown)),
        ("x_t (linear)", _tiles(preview(run.x_t, weights), shown)),
        ("predicted noise", _tiles(eps_images, shown)),
        ("predicted x0 (VAE)", _tiles(x0_images, shown)),
    ]
    grid = figures.labelled_grid(rows, titles)
    heading = (f"{run.prompt!r}, seed {run.seed}, {run.sampler}, CFG {run.guidance_scale:g}: each step's input x_t, "
               "the noise the model sees in it, and its clean-image estimate")  # fmt: skip
    return figures.above(figures.caption(heading, grid.width), grid, gap=2)


def _frames(run: Trajectory, x_t_images, x0_images, eps_images) -> list[Image.Image]:
    """One frame per step: input x_t, predicted noise, predicted x0; then the final image."""
    frames = []
    for i in range(len(run.x0)):
        tiles = figures.beside(*(figures.to_image(t[i], TILE) for t in (x_t_images, eps_images, x0_images)), gap=4)
        label = f"step {i + 1}/{len(run.x0)}  sigma {float(run.sigmas[i]):.3g}   x_t | noise | x0"
        frames.append(figures.above(figures.caption(label, tiles.width), tiles, gap=0))
    final = figures.to_image(run.image, TILE)
    tiles = figures.beside(final, Image.new("RGB", final.size, "white"), final, gap=4)
    frames.append(figures.above(figures.caption("done: the decoded image", tiles.width), tiles, gap=0))
    return frames


def _schedule_figure(model: StableDiffusion, s: ExplainSettings) -> Image.Image:
    sigmas = sampling_schedule(model, s.steps, s.sampler).sigmas.double()
    steps = range(len(sigmas))
    sigma_chart = figures.line_chart({"sigma": [(i, float(v)) for i, v in zip(steps, sigmas, strict=True)]},
                                     f"sigma per step ({s.sampler}, {s.steps} steps; log scale)", "step",
                                     log_y=True)  # fmt: skip
    alpha_bar = 1 / (1 + sigmas**2)
    alpha_chart = figures.line_chart({"alpha_bar": [(i, float(v)) for i, v in zip(steps, alpha_bar, strict=True)]},
                                     "alpha_bar = 1 / (1 + sigma^2): the signal left", "step")  # fmt: skip
    return figures.beside(sigma_chart, alpha_chart)


def _attention_figure(run: Trajectory, tokens: list[Word]) -> tuple[Image.Image, dict]:
    base = figures.to_image(run.image, TILE)
    heat = run.heat
    total = heat.sum()
    on_words = sum(float(heat[w.positions].sum()) for w in tokens)
    bos = float(heat[0].sum())
    panels, per_word = [base], []
    for w in tokens:
        m = word_map(heat, w)
        panels.append(figures.overlay(base, m.numpy()))
        row, col = divmod(int(m.argmax()), m.shape[1])
        per_word.append({"word": w.text, "share": round(float(m.sum() / total), 4), "peak_xy": [col, row]})
    grid = figures.labelled_grid([("", panels)], ["image"] + [w.text for w in tokens])
    numbers = {
        "share_start_token": round(bos / float(total), 4),
        "share_words": round(on_words / float(total), 4),
        "share_end_and_padding": round(1 - (bos + on_words) / float(total), 4),
        "words": per_word,
    }
    return grid, numbers


def _pair_figure(model: StableDiffusion, a: Trajectory, b: Trajectory, shown: list[int]) -> tuple[Image.Image, dict]:
    distance = divergence(a, b)
    rows = [(f"{r.prompt}", _tiles(decode(model, r.x0), shown)) for r in (a, b)]
    diff = (a.image - b.image).abs().amax(dim=0, keepdim=True).expand(3, -1, -1)
    titles = [f"predicted x0, step {i + 1}" for i in shown]
    grid = figures.labelled_grid(rows, titles)
    chart = figures.line_chart({"RMS(x0_a - x0_b)": [(i + 1, d) for i, d in enumerate(distance)]},
                               "how far apart the two runs' x0 estimates are", "step")  # fmt: skip
    finals = [figures.to_image(picture, TILE) for picture in (a.image, b.image, diff)]
    ends = figures.labelled_grid([("", finals)], ["first", "second", "|difference|"])
    numbers = {"prompts": [a.prompt, b.prompt], "x0_rms_difference": [round(d, 5) for d in distance],
               "image_mean_abs_difference": round(float((a.image - b.image).abs().mean()), 5)}  # fmt: skip
    return figures.above(grid, figures.beside(chart, ends)), numbers


def _forward_figure(model: StableDiffusion, noised, weights) -> Image.Image:
    x_t = torch.stack([e.x_t for e in noised])
    columns = range(len(noised))
    rows = [
        ("pixels + noise", [figures.to_image(e.pixels, TILE) for e in noised]),
        ("latent x_t (VAE)", _tiles(decode(model, x_t), columns)),
        ("target noise", _tiles(preview(torch.stack([e.eps for e in noised]), weights, True), columns)),
        ("predicted noise", _tiles(preview(torch.stack([e.eps_hat for e in noised]), weights, True), columns)),
        ("predicted x0 (VAE)", _tiles(decode(model, torch.stack([e.x0_hat for e in noised])), columns)),
    ]
    titles = [f"t {e.t}: mse {e.mse:.3f}" for e in noised]
    return figures.labelled_grid(rows, titles)


# --- writing ------------------------------------------------------------------------------------

_SECTIONS = [
    ("trajectory", "Denoising, step by step",
     "Each column is one sampler step. x_t is what the UNet reads (decoded by the VAE, and by a linear "
     "latent-to-RGB map fitted to this run, the cheap preview UIs show); ε̂ is the noise the guided model "
     "sees in it; x0 ̂ is the clean image that noise implies, x0 = x − σ·ε̂. The animation shows every step."),
    ("schedule", "The noise schedule this sampler walks",
     "σ is the noise level (x = x0 + σ·ε); ᾱ = 1/(1+σ²) is the share of signal the UNet's input keeps."),
    ("attention", "Where each word looks",
     "Cross-attention maps summed over every layer, head and step, then over each word's tokens "
     "(DAAM, Tang et al. 2022), drawn over the final image; each map scaled to its own maximum."),
    ("guidance", "Classifier-free guidance", "The same seed at each guidance scale: x0 = x0_u + s·(x0_c − x0_u)."),
    ("pair", "One word changed",
     "Both prompts start from the same noise; the chart shows how far apart their clean-image estimates drift."),
    ("forward", "Forward diffusion, the training example",
     "The image's latent noised to each t, x_t = √ᾱ·z0 + √(1−ᾱ)·ε (the first row applies the same formula to "
     "pixels); the model's guess of ε and the loss it would pay in training (mse)."),
]  # fmt: skip


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _write(out: Path, pngs: dict, frames: list[Image.Image], numbers: dict, s: ExplainSettings,
           run: Trajectory) -> Report:  # fmt: skip
    out = Path(out)
    files = []
    for name, image in pngs.items():
        if image is not None:
            save_png(image, out / f"{name}.png")
            files.append(out / f"{name}.png")
    save_png(figures.to_image(run.image), out / "image.png", {"parameters": s.prompt})
    write_gif(frames, out / "denoising.gif")
    files += [out / "image.png", out / "denoising.gif"]
    if s.mp4:
        write_mp4(frames, out / "denoising.mp4")
        files.append(out / "denoising.mp4")
    write_json(numbers, out / "explain.json")
    page = _html(pngs, (out / "denoising.gif").read_bytes(), numbers, s.mp4)
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    files += [out / "explain.json", out / "report.html"]
    return Report(out, files, numbers)


def _html(pngs: dict, gif: bytes, numbers: dict, mp4: bool) -> str:
    def img(data: bytes, mime: str, alt: str) -> str:
        return f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{base64.b64encode(data).decode()}">'

    token_rows = "".join(
        f"<tr><td>{html.escape(t['word'])}</td><td><code>{html.escape(' '.join(t['pieces']))}</code></td>"
        f"<td>{', '.join(map(str, t['positions']))}</td><td>{w['share']:.1%}</td></tr>"
        for t, w in zip(numbers["tokens"], numbers["attention"]["words"], strict=True)
    )  # fmt: skip
    a = numbers["attention"]
    parts = [
        f"<h1>{html.escape(numbers['prompt'])}</h1>",
        "<p>" + html.escape(", ".join(f"{k} {v}" for k, v in numbers["settings"].items() if k != "prompt")) + "</p>",
        "<h2>Tokens</h2><p>CLIP reads the prompt as byte-pair pieces (<code>&lt;/w&gt;</code> ends a word), between "
        "a start and an end token, padded to 77. Share of all cross-attention: "
        f"start token {a['share_start_token']:.1%}, the words {a['share_words']:.1%}, "
        f"end and padding {a['share_end_and_padding']:.1%}.</p>",
        f"<table><tr><th>word</th><th>pieces</th><th>positions</th><th>attention share</th></tr>{token_rows}</table>",
    ]  # fmt: skip
    for name, title, text in _SECTIONS:
        if pngs.get(name) is None:
            if name == "pair":
                parts.append(f"<h2>{title}</h2><p>No word to swap was given (--swap OLD=NEW).</p>")
            continue
        parts.append(f"<h2>{title}</h2><p>{html.escape(text)}</p>{img(_png_bytes(pngs[name]), 'image/png', title)}")
        if name == "trajectory":
            video = ' (also as <a href="denoising.mp4">denoising.mp4</a>)' if mp4 else ""
            parts.append(f"<p>Every step, animated{video}:</p>{img(gif, 'image/gif', 'denoising animation')}")
    style = ("body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}"
             "img{max-width:100%;image-rendering:pixelated;display:block;margin:.5em 0}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}")  # fmt: skip
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>latentdiff explain: '
            f"{html.escape(numbers['prompt'])}</title><style>{style}</style></head><body>{''.join(parts)}"
            f"<p><small>latentdiff explain writes every number on this page to explain.json beside it. "
            f"{numbers['seconds']} s.</small></p>"
            "</body></html>")  # fmt: skip
