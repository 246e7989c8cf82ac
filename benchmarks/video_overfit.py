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

    .venv/bin/python benchmarks/video_overfit.py [--image models/shapes-64] [--steps 800] [--seeds 4]
        [--no-frame-position] [--no-temporal-text] [--spatial-lr-scale 0.25] [--v-weight-cap 50]

Prints the loss every 50 steps, then per direction how many sampled videos moved that way and how
far the object's centre went (pixels, along the named direction / across it; 64x64 frames); writes nothing.
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


def four_videos(frames: int = 8, speed: float = 2.0, colour: str = "red", shape: str = "circle"):
    """(4, F, 64, 64, 3) uint8 videos of one object leaving the centre in each direction, and captions."""
    import numpy as np

    from latentdiff.data.moving_shapes import MovingScene, render_video
    from latentdiff.data.shapes import Obj, Scene

    videos, captions = [], []
    for direction in DIRECTION_WORDS:
        obj = Obj(shape=shape, colour=colour, size="small", cx=32.0, cy=32.0, side=12.0)
        videos.append(render_video(MovingScene(Scene("white", [obj]), [direction], [speed]), frames))
        captions.append(f"a {colour} {shape} moving {direction}")
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image", default="models/shapes-64", help="the image model folder the video UNet starts from")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--seeds", type=int, default=4, help="sampled videos per caption")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--spatial-lr-scale", type=float, default=0.25)
    p.add_argument("--shared-noise", type=float, default=0.5)
    p.add_argument("--no-frame-position", action="store_true")
    p.add_argument("--no-temporal-text", action="store_true")
    p.add_argument("--guidance", type=float, default=2.5)
    p.add_argument(
        "--prediction",
        default="",
        choices=["", "epsilon", "v_prediction"],
        help="train the video UNet to predict this (default: what the image model predicts)",
    )
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--samplers", default="euler", help="comma-separated samplers to draw the checked videos with")
    p.add_argument("--weights", help="a .pt file: load the trained video UNet from it if it exists (no training), "
                   "else save it there after training")  # fmt: skip
    p.add_argument(
        "--v-weight-cap",
        type=float,
        default=50.0,
        help="weigh each video's eps error by min(1 / alpha_bar_t, cap), mean 1 (train/video.py); 0: off",
    )
    args = p.parse_args(argv)

    from latentdiff import weights
    from latentdiff.data.moving_shapes import check_video, reverse_caption
    from latentdiff.samplers import mix_frame_noise
    from latentdiff.schedules import alphas_cumprod
    from latentdiff.train.common import image_tensor
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
                                           temporal_text=not args.no_temporal_text)  # fmt: skip
    videos, captions = four_videos()
    with torch.no_grad():
        frames = image_tensor(videos.reshape(-1, *videos.shape[2:]))
        x0 = model.vae.encode(frames).mean * model.config.vae.scaling_factor
        x0 = x0.view(len(videos), videos.shape[1], *x0.shape[1:]).transpose(1, 2).contiguous()  # (4, C, F, h, w)
        context = model.encode_prompt(captions).float()
        empty = model.encode_prompt([""]).float()
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
    if trained:
        video_unet.load_state_dict(torch.load(args.weights))
    for step in range(1, 0 if trained else args.steps + 1):
        t = torch.randint(len(alpha_bar), (len(x0),))
        eps = mix_frame_noise(torch.randn_like(x0), torch.randn_like(x0[:, :, :1]), args.shared_noise)
        drop = torch.rand(len(x0)) < 0.1
        states = torch.where(drop.view(-1, 1, 1), empty, context)
        loss = denoising_loss(video_unet, x0, states, t, eps, alpha_bar, model.config.scheduler.prediction_type,
                              None if weights is None else weights[t])  # fmt: skip
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            print(f"step {step}: loss {loss.item():.4f} ({time.time() - start:.0f} s)", flush=True)
    if args.weights and not trained:  # whole or not at all: a temp file, then a rename
        torch.save(video_unet.state_dict(), f"{args.weights}.tmp")
        os.replace(f"{args.weights}.tmp", args.weights)
    video_unet.eval()
    from video_direction import TIMESTEPS, x0_errors  # benchmarks/, on sys.path when run as a script

    swapped = [reverse_caption(c) for c in captions]
    for t in TIMESTEPS:
        true, other = x0_errors(model, video_unet, x0, captions, swapped, t)
        print(f"t={t}: x0 error {true:.4f} under the true caption, {other:.4f} reversed: ratio {other / true:.2f}")
    for sampler in args.samplers.split(","):
        for caption in captions:
            moved, distances = 0, []
            for seed in range(args.seeds):
                *_, video = txt2video(model, video_unet, caption, frames=videos.shape[1], steps=args.sample_steps,
                                      guidance_scale=args.guidance, seed=seed, sampler=sampler)  # fmt: skip
                video = (video[0].permute(1, 2, 3, 0).clamp(0, 1) * 255).round().byte().numpy()  # (F, H, W, 3)
                moved += all(check_video(video, caption).moved_right)
                distances.append(travel(video, caption))
            shown = ", ".join(f"{along:+.1f}/{across:.1f}" for along, across in distances)
            print(f"{sampler}, {caption}: moved the named way in {moved}/{args.seeds} "
                  f"(along/across {shown} px; trained on +14.0/0)")  # fmt: skip


if __name__ == "__main__":
    main()
