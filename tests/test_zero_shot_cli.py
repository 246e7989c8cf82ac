"""`latentdiff classify` / `score` and loading a CLIP from each kind of folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from latentdiff.cli import main
from latentdiff.clip import CLIPModel
from latentdiff.config import CLIPVisionConfig
from latentdiff.model import StableDiffusion
from latentdiff.weights import save
from latentdiff.weights.clip_folder import ImageNorm, open_clip_source, save_clip
from latentdiff.zero_shot import preprocess


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """A tiny diffusers folder that carries its whole CLIP (random weights)."""
    folder = tmp_path_factory.mktemp("models") / "tiny"
    model = StableDiffusion.from_preset("tiny")
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                              image_size=64, patch_size=16)  # fmt: skip
    clip = CLIPModel(model.config.text, vision, 24)
    clip.text_model.load_state_dict(model.text_encoder.state_dict())
    save(model, folder)
    save_clip(clip, folder)
    return folder


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    paths = []
    for i, colour in enumerate([(220, 40, 40), (40, 80, 220)]):
        path = folder / f"p{i}.png"
        Image.fromarray(np.full((80, 96, 3), colour, np.uint8)).save(path)  # not square: resized, cropped
        paths.append(str(path))
    return paths


def test_classify_prints_ranked_labels_and_json(clip_folder, pictures, capsys):
    assert main(["classify", *pictures, "--labels", "red,blue,green", "--clip", str(clip_folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{pictures[0]}: ") and lines[0].count("%") == 3
    args = ["classify", pictures[0], "--labels", "red,blue", "--clip", str(clip_folder), "--json", "--template", "{}"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    probs = [x["probability"] for x in result[0]["labels"]]
    assert (
        result[0]["image"] == pictures[0] and sum(probs) == pytest.approx(1, abs=1e-3) and probs == sorted(probs)[::-1]
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--labels", "red"], "give at least two labels"),
        (["--labels", "red,red"], "a label is listed twice: 'red'"),
        (["--labels", "red,blue", "--template", "a photo"], "exactly one {} where the label goes"),
        (["--labels-file", "/nonexistent/labels.txt"], "cannot read the labels file"),
    ],
)
def test_classify_refuses_bad_input_in_one_line(clip_folder, pictures, capsys, args, message):
    assert main(["classify", pictures[0], "--clip", str(clip_folder), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_classify_names_a_missing_or_broken_image(clip_folder, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    for path, message in ((tmp_path / "missing.png", "no such image"), (tmp_path / "broken.png", "not a readable")):
        assert main(["classify", str(path), "--labels", "a,b", "--clip", str(clip_folder)]) == 2
        assert message in capsys.readouterr().err


def test_score_reads_each_png_prompt(clip_folder, tmp_path, capsys):
    out = tmp_path / "g.png"
    assert main(["generate", "--model", str(clip_folder), "--prompt", "a red circle", "--steps", "2",
                 "--batch", "2", "--out", str(out)]) == 0  # fmt: skip
    capsys.readouterr()
    images = [str(tmp_path / "g-0.png"), str(tmp_path / "g-1.png")]
    assert main(["score", *images, "--clip", str(clip_folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("('a red circle')") and lines[-1].startswith("mean CLIP score")
    plain = tmp_path / "plain.png"
    Image.new("RGB", (64, 64)).save(plain)
    assert main(["score", str(plain), "--clip", str(clip_folder)]) == 2
    assert "no generation parameters" in capsys.readouterr().err


def test_a_transformers_clip_folder_gives_the_same_logits(tmp_path):
    from transformers import CLIPConfig
    from transformers import CLIPModel as TheirCLIP

    torch.manual_seed(0)
    ref = TheirCLIP(CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=24,
    )).eval()  # fmt: skip
    ref.save_pretrained(tmp_path / "clip")
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]  # OpenAI CLIP's
    (tmp_path / "clip" / "preprocessor_config.json").write_text(
        json.dumps({"crop_size": {"height": 32, "width": 32}, "image_mean": mean, "image_std": std})
    )
    loaded = open_clip_source(tmp_path / "clip")
    assert loaded.norm == ImageNorm(32, tuple(mean), tuple(std))
    pixels = preprocess([Image.new("RGB", (40, 32), (200, 30, 90))], loaded.norm)
    ids = loaded.tokenizer(["a photo of a cat", "a dog"]).input_ids
    with torch.no_grad():
        theirs = ref(input_ids=ids, pixel_values=pixels).logits_per_image
        torch.testing.assert_close(loaded.model(ids, pixels), theirs, atol=1e-5, rtol=0)


def test_open_clip_source_refuses_other_folders(tmp_path):
    from latentdiff.weights import WeightsError

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(WeightsError, match="not a CLIPModel config"):
        open_clip_source(tmp_path)
    with pytest.raises(WeightsError, match="not a CLIP"):
        open_clip_source(tmp_path / "nothing")
