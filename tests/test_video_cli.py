"""`latentdiff train video` writes a video model folder; `latentdiff video` draws GIF + MP4 from it."""

from __future__ import annotations

import torch
from PIL import Image

from latentdiff.cli import main
from latentdiff.weights.io import read_state_dict
from latentdiff.weights.video_folder import load_video
from tests.test_train_unet import frozen  # noqa: F401 (the fixture)


def test_train_then_draw_a_video(frozen, tmp_path, capsys):  # noqa: F811
    recipe = tmp_path / "video.toml"
    recipe.write_text(f"""
vae = "{frozen}"
clip = "{frozen}"
frames = 4
max_frames = 4
videos = 4
image_batch_size = 2
batch_size = 2
shared_noise = 0.5
frame_position = true
temporal_text = true
space_time_conv = true
log_every = 2
ckpt_every = 2
out = "{tmp_path / "run"}"
[model]
sample_size = 8
block_out_channels = [32, 32]
down_block_types = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
up_block_types = ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
layers_per_block = 1
cross_attention_dim = 32
head_dim = 16
norm_num_groups = 8
[optim]
max_steps = 2
warmup_steps = 1
[data]
canvas = 16
pool = 4
heldout = 4
""")
    assert main(["train", "video", "--recipe", str(recipe)]) == 0
    folder = tmp_path / "run" / "model"
    model, video = load_video(folder)
    assert video.max_frames == 4 and video.shared_noise == 0.5 and video.frame_position and video.temporal_text
    assert video.space_time_conv and video.temporal[0].space_time.pointwise.weight.abs().sum() > 0  # trained, loaded
    assert model.config.unet.sample_size == 8
    out = tmp_path / "clip.gif"
    args = ["video", "--model", str(folder), "--prompt", "a red circle moving left", "--frames", "3", "--steps", "2"]
    assert main([*args, "--out", str(out)]) == 0
    gif = Image.open(out)
    assert gif.n_frames == 3 and gif.size == (32, 32)  # 16 px frames at --scale 2
    assert out.with_suffix(".mp4").read_bytes()[4:8] == b"ftyp"
    capsys.readouterr()
    assert main(["evaluate", "--model", str(folder), "--videos", "2", "--prompts", "0", "--steps", "2",
                 "--grid", str(tmp_path / "eval.png")]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "motion: named objects right" in printed and "(2 held-out prompts, 4 frames, 2 euler steps" in printed
    assert Image.open(tmp_path / "eval-video.png").size[1] > Image.open(tmp_path / "eval-video.png").size[0] / 8
    assert main(["evaluate", "--model", str(frozen), "--videos", "2"]) == 2
    assert "is not a video model" in capsys.readouterr().err
    half = tmp_path / "half"  # shipping: float16, shards; the temporal layers travel with the image model
    assert main(["convert", str(folder), str(half), "--to", "diffusers", "--half", "--max-shard-mb", "1"]) == 0
    _, video16 = load_video(half)
    assert read_state_dict(half / "video_unet" / "temporal.safetensors")[0]["temporal.0.to_out.weight"].dtype == (
        torch.float16
    )
    assert video16.max_frames == 4 and video16.shared_noise == 0.5 and video16.frame_position and video16.temporal_text
    assert video16.space_time_conv
    assert main([*args, "--frames", "9", "--out", str(out)]) == 2
    assert "frames must be between 1 and 4" in capsys.readouterr().err
    assert main(["video", "--model", str(frozen), "--out", str(out)]) == 2
    assert "not a video model" in capsys.readouterr().err
