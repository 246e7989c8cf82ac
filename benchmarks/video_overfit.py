"""Can the video UNet learn a direction word at all? Overfit four videos that differ only in it.

The four videos hold one object at the same start (the canvas centre), moving left, right, up and
down; their captions differ only in the direction word ("a red circle moving left", ...). Their
first frames are the same image, so the spatial layers, which see one frame at a time, cannot
tell the four apart from a frame: only the temporal layers (with the frame's index and the caption)
can put the object where the word says. A video UNet built from an image model (temporal layers as
identity) is trained on these four alone, then each caption is sampled from several seeds and
checked (data/moving_shapes.check_video): does the object move the named way?

If it cannot learn this, the motion bars are out of reach for any amount of data; if it can, what the
full runs lack is training (steps, data), not a way for the word to reach the frames.

`--pool` widens the training set a rung at a time, towards what the full runs train on, to find
where learning stops (see probe_pool): more starts, then more objects, then whole moving-shapes
scenes. A wider pool is also checked on held-out videos of the same kind (a seed it never trained on).

    .venv/bin/python benchmarks/video_overfit.py [--image models/shapes-64] [--steps 800] [--seeds 4]
        [--pool centre|starts|objects|scenes] [--pool-size N] [--batch 4] [--eval-every 200]
        [--no-frame-position] [--no-temporal-text] [--spatial-lr-scale 0.25] [--v-weight-cap 50]

Prints the loss every 50 steps and the x0 error ratio (benchmarks/video_direction.py) every
--eval-every steps, then per caption how many sampled videos moved the named way and how far the
object's centre went (pixels, along the named direction / across it; 64x64 frames); writes nothing
but --weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DIRECTION_WORDS = ("left", "right", "up", "down")


def every_direction(obj, frames: int, speed: float) -> tuple[list, list[str]]:
    """Four (F, 64, 64, 3) uint8 videos of `obj` leaving its start left, right, up and down, on white, and captions."""
    from latentdiff.data.moving_shapes import MovingScene, render_video
    from latentdiff.data.shapes import Scene

    videos = [render_video(MovingScene(Scene("white", [obj]), [d], [speed]), frames) for d in DIRECTION_WORDS]
    return videos, [f"a {obj.colour} {obj.shape} moving {d}" for d in DIRECTION_WORDS]


def four_videos(frames: int = 8, speed: float = 2.0, colour: str = "red", shape: str = "circle"):
    """(4, F, 64, 64, 3) uint8 videos of one object leaving the centre in each direction, and captions."""
    import numpy as np

    from latentdiff.data.shapes import Obj

    videos, captions = every_direction(Obj(shape, colour, "small", 32.0, 32.0, 12.0), frames, speed)
    return np.stack(videos), captions


POOLS = ("centre", "starts", "objects", "scenes")


def probe_pool(pool: str, n: int, seed: int, frames: int = 8, speed: float = 2.0):
    """(V, F, 64, 64, 3) uint8 videos and their captions for one rung of the ladder.

    centre: four_videos (n is ignored). starts: the red circle from n random starts, each start in all
    four directions (4n videos). objects: n random objects (colour, shape, size) from random starts,
    each in all four directions (4n). In these two every start suits all four directions and is
    rendered in each, so a first frame never tells the direction: only the word does, as in centre.
    scenes: n moving-shapes videos exactly as the full runs train on (one or two objects, any speed,
    background and optional words; data/moving_shapes.make_video_dataset).
    """
    import numpy as np

    from latentdiff.data.moving_shapes import make_video_dataset
    from latentdiff.data.shapes import Obj, _sample_obj

    if pool == "centre":
        return four_videos(frames, speed)
    if pool == "scenes":
        return make_video_dataset(seed, n, frames)
    rng = np.random.default_rng(seed)
    videos, captions = [], []
    for _ in range(n):
        obj = _sample_obj(rng, 1.0) if pool == "objects" else Obj("circle", "red", "small", 0.0, 0.0, 12.0)
        reach = obj.side / 2 + 1 + speed * (frames - 1)  # half side + margin + travel, from either edge
        obj.cx, obj.cy = (float(c) for c in rng.uniform(reach, 64 - reach, size=2))
        more_videos, more_captions = every_direction(obj, frames, speed)
        videos += more_videos
        captions += more_captions
    return np.stack(videos), captions


def travel(video, caption: str) -> tuple[float, float]:
    """How far the captioned object's centre went along the named direction and across it, first to
    last frame it is seen (nan if seen in fewer than two frames)."""
    from latentdiff.data.moving_shapes import DIRECTIONS, parse_motion_caption
    from latentdiff.data.shapes import parse_objects

    _, colour, shape, direction = parse_motion_caption(caption)["objects"][0]
    track = [next(((r.cx, r.cy) for r, _ in parse_objects(f)[1] if (r.colour, r.shape) == (colour, shape)), None)
             for f in video]  # fmt: skip
    seen = [p for p in track if p is not None]
    if len(seen) < 2:
        return float("nan"), float("nan")
    dx, dy = DIRECTIONS[direction]
    (x0, y0), (x1, y1) = seen[0], seen[-1]
    return (x1 - x0) * dx + (y1 - y0) * dy, abs((x1 - x0) * dy) + abs((y1 - y0) * dx)


def encode_videos(model, videos) -> torch.Tensor:
    """(V, F, H, W, 3) uint8 -> the VAE's scaled latent means (V, C, F, h, w)."""
    from latentdiff.train.video import video_posteriors

    return (video_posteriors(model.vae, videos)[0] * model.config.vae.scaling_factor).contiguous()


def print_ratios(model, video_unet, checked: dict, label: str) -> None:
    """The x0 error ratio (reversed / true caption) at each of video_direction's timesteps, per checked set."""
    from video_direction import TIMESTEPS, x0_errors  # benchmarks/, on sys.path when run as a script

    from latentdiff.data.moving_shapes import reverse_caption

    video_unet.eval()
    for name, (x0, captions) in checked.items():
        swapped = [reverse_caption(c) for c in captions]
        for t in TIMESTEPS:
            true, other = x0_errors(model, video_unet, x0, captions, swapped, t)
            print(f"{label}{name} t={t}: x0 error {true:.4f} under the true caption, {other:.4f} reversed: "
                  f"ratio {other / true:.2f}", flush=True)  # fmt: skip
    video_unet.train()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image", default="models/shapes-64", help="the image model folder the video UNet starts from")
    p.add_argument("--pool", default="centre", choices=POOLS, help="the training videos: a rung of probe_pool's ladder")
    p.add_argument("--pool-size", type=int, default=16, help="n of probe_pool (starts, objects or scenes)")
    p.add_argument("--batch", type=int, default=4, help="videos per step (the whole pool if it is no larger)")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--eval-every", type=int, default=0, help="print the x0 error ratios every this many steps too")
    p.add_argument("--seeds", type=int, default=4, help="sampled videos per caption")
    p.add_argument("--captions", type=int, default=4, help="captions sampled from the pool (and as many held out)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--spatial-lr-scale", type=float, default=0.25)
    p.add_argument("--shared-noise", type=float, default=0.5)
    p.add_argument("--no-frame-position", action="store_true")
    p.add_argument("--no-temporal-text", action="store_true")
    p.add_argument("--space-time-conv", action="store_true", help="end each temporal layer with a 3x3x3 convolution")
    p.add_argument("--guidance", type=float, default=2.5)
    p.add_argument(
        "--prediction",
        default="",
        choices=["", "epsilon", "v_prediction"],
        help="train the video UNet to predict this (default: what the image model predicts)",
    )
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--samplers", default="euler", help="comma-separated samplers to draw the checked videos with")
    p.add_argument("--init", help="a .pt file of --weights: train on from it (a fresh optimizer)")
    p.add_argument("--weights", help="a .pt file: load the trained video UNet from it if it exists (no training), "
                   "else save it there after training")  # fmt: skip
    p.add_argument(
        "--v-weight-cap",
        type=float,
        default=50.0,
        help="weigh each video's eps error by min(1 / alpha_bar_t, cap), mean 1 (train/video.py); 0: off",
    )
    args = p.parse_args(argv)
    if args.pool_size < 1 or args.batch < 1:
        p.error(f"--pool-size and --batch must be at least 1, not {args.pool_size} and {args.batch}")

    from latentdiff import weights
    from latentdiff.data.moving_shapes import check_video
    from latentdiff.samplers import mix_frame_noise
    from latentdiff.schedules import alphas_cumprod
    from latentdiff.train.unet import denoising_loss
    from latentdiff.train.video import v_weights
    from latentdiff.video_pipeline import txt2video
    from latentdiff.video_unet import VideoUNet

    torch.manual_seed(0)
    model = weights.load(args.image).float()
    if args.prediction:
        model.set_prediction_type(args.prediction)
    video_unet = VideoUNet.from_image_unet(model.unet, 16, shared_noise=args.shared_noise,
                                           frame_position=not args.no_frame_position,
                                           temporal_text=not args.no_temporal_text,
                                           space_time_conv=args.space_time_conv)  # fmt: skip
    videos, captions = probe_pool(args.pool, args.pool_size, seed=0)
    x0 = encode_videos(model, videos)  # (V, C, F, h, w)
    with torch.no_grad():
        context = model.encode_prompt(captions).float()
        empty = model.encode_prompt([""]).float()
    checked = {"trained": (x0[:16], captions[:16])}
    held_out = []
    if args.pool != "centre":  # a seed the pool never used: does what it learned carry to new videos?
        new_videos, held_out = probe_pool(args.pool, 16 if args.pool == "scenes" else 4, seed=1)  # 16 videos
        checked["held-out"] = (encode_videos(model, new_videos[:16]), held_out[:16])
    print(f"pool {args.pool}: {len(videos)} videos, {len(set(captions))} captions; batch {min(args.batch, len(x0))}")
    alpha_bar = alphas_cumprod(model.config.scheduler).float()
    weights = v_weights(alpha_bar, args.v_weight_cap) if args.v_weight_cap else None
    groups = [{"params": video_unet.temporal.parameters(), "lr": args.lr}]
    if args.spatial_lr_scale:
        groups.append({"params": video_unet.unet.parameters(), "lr": args.lr * args.spatial_lr_scale})
    else:
        video_unet.unet.requires_grad_(False)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    start = time.time()
    video_unet.train()
    trained = args.weights and Path(args.weights).exists()
    if trained or args.init:
        video_unet.load_state_dict(torch.load(args.weights if trained else args.init))
    for step in range(1, 0 if trained else args.steps + 1):
        # The whole pool while it fits one batch (so the centre rung draws no extra random numbers).
        idx = torch.arange(len(x0)) if len(x0) <= args.batch else torch.randperm(len(x0))[: args.batch]
        batch = x0[idx]
        t = torch.randint(len(alpha_bar), (len(batch),))
        eps = mix_frame_noise(torch.randn_like(batch), torch.randn_like(batch[:, :, :1]), args.shared_noise)
        drop = torch.rand(len(batch)) < 0.1
        states = torch.where(drop.view(-1, 1, 1), empty, context[idx])
        loss = denoising_loss(video_unet, batch, states, t, eps, alpha_bar, model.config.scheduler.prediction_type,
                              None if weights is None else weights[t])  # fmt: skip
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            print(f"step {step}: loss {loss.item():.4f} ({time.time() - start:.0f} s)", flush=True)
        if args.eval_every and step % args.eval_every == 0 and step < args.steps:
            print_ratios(model, video_unet, checked, f"step {step}, ")
    if args.weights and not trained:  # whole or not at all: a temp file, then a rename
        torch.save(video_unet.state_dict(), f"{args.weights}.tmp")
        os.replace(f"{args.weights}.tmp", args.weights)
    print_ratios(model, video_unet, checked, "")
    video_unet.eval()
    # The first --captions of each set, once each (the starts rung's held-out captions are its trained ones).
    sampled = list(dict.fromkeys(list(dict.fromkeys(captions))[: args.captions] + held_out[: args.captions]))
    for sampler in args.samplers.split(","):
        total = 0
        for caption in sampled:
            moved, distances = 0, []
            for seed in range(args.seeds):
                *_, video = txt2video(model, video_unet, caption, frames=videos.shape[1], steps=args.sample_steps,
                                      guidance_scale=args.guidance, seed=seed, sampler=sampler)  # fmt: skip
                video = (video[0].permute(1, 2, 3, 0).clamp(0, 1) * 255).round().byte().numpy()  # (F, H, W, 3)
                moved += all(check_video(video, caption).moved_right)
                distances.append(travel(video, caption))
            total += moved
            shown = ", ".join(f"{along:+.1f}/{across:.1f}" for along, across in distances)
            where = "trained" if caption in captions else "held out"
            print(f"{sampler}, {caption} ({where}): moved the named way in {moved}/{args.seeds} "
                  f"(along/across {shown} px)", flush=True)  # fmt: skip
        print(f"{sampler}: {total}/{args.seeds * len(sampled)} sampled videos moved the named way")


if __name__ == "__main__":
    main()
