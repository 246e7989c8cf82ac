"""`latentdiff serve` against real clients: webuiapi (the community's A1111 client) and plain HTTP.

One real server (uvicorn on loopback) with a tiny random model. Its answers are checked against the
CLI's files for the same settings: the same PNG bytes, so the same pixels and `parameters` text.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import webuiapi
from PIL import Image

from latentdiff.cli import main
from latentdiff.metadata import A1111_SAMPLERS
from latentdiff.serve.settings import Limits, ServeOptions
from tests.serving import running_server, save_tiny_model

LIMITS = Limits(max_width=128, max_height=128, max_steps=400, max_images=8, max_body_mb=2)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    (root / "more").mkdir()
    return {"tiny": save_tiny_model(root / "tiny"), "tiny-b": save_tiny_model(root / "more" / "tiny-b", seed=1)}


@pytest.fixture(scope="module")
def url(models):
    with running_server(ServeOptions(models["tiny"], models["tiny"].parent / "more", limits=LIMITS)) as url:
        yield url


def post(url: str, path: str, body: dict, timeout: float = 60) -> requests.Response:
    return requests.post(f"{url}/sdapi/v1/{path}", json=body, timeout=timeout)


def png_bytes(b64: str) -> bytes:
    return base64.b64decode(b64)


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_webuiapi_txt2img_gives_the_clis_png_bytes(url, models, tmp_path):
    api = webuiapi.WebUIApi(baseurl=f"{url}/sdapi/v1")
    settings = dict(prompt="a red circle, small", negative_prompt="blurry", seed=40, steps=3, cfg_scale=6)
    result = api.txt2img(**settings, sampler_name="DPM++ 2M", scheduler="Karras", width=32, height=16, batch_size=2)

    args = ["generate", "--model", str(models["tiny"]), "--prompt", "a red circle, small", "--negative-prompt",
            "blurry", "--steps", "3", "--sampler", "dpmpp_2m", "--karras", "--cfg-scale", "6", "--seed", "40",
            "--width", "32", "--height", "16", "--batch", "2", "--out", str(tmp_path / "x.png")]  # fmt: skip
    assert main(args) == 0
    for i, image in enumerate(result.images):
        assert image.size == (32, 16)
        assert png_bytes(result.json["images"][i]) == (tmp_path / f"x-{i}.png").read_bytes()
    assert result.images[1].info["parameters"] == (
        "a red circle, small\nNegative prompt: blurry\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras, "
        "CFG scale: 6.0, Seed: 41, Size: 32x16, Model: tiny, Version: latentdiff"
    )
    assert result.info["all_seeds"] == [40, 41]
    assert result.info["infotexts"] == [image.info["parameters"] for image in result.images]
    assert result.parameters["prompt"] == "a red circle, small"  # A1111 echoes the request


def test_n_iter_runs_continue_the_seeds_and_any_image_can_be_made_alone(url):
    body = {"prompt": "a cyan triangle", "seed": 10, "batch_size": 2, "n_iter": 2, "steps": 2, "width": 16}
    made = post(url, "txt2img", body).json()
    assert json.loads(made["info"])["all_seeds"] == [10, 11, 12, 13]
    alone = post(url, "txt2img", body | {"seed": 12, "batch_size": 1, "n_iter": 1}).json()
    assert made["images"][2] == alone["images"][0]


def test_webuiapi_img2img_and_inpainting_give_the_clis_png_bytes(url, models, tmp_path):
    start = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    start.save(tmp_path / "start.png")
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 16, 32))  # repaint the left half
    mask.save(tmp_path / "mask.png")
    api = webuiapi.WebUIApi(baseurl=f"{url}/sdapi/v1")
    common = dict(prompt="a blue square", seed=3, steps=4, cfg_scale=7.5, sampler_name="Euler a", width=32, height=32)

    edited = api.img2img(images=[start], denoising_strength=0.5, **common)
    repainted = api.img2img(images=[start], mask_image=mask, denoising_strength=0.8, **common)

    cli = ["--model", str(models["tiny"]), "--image", str(tmp_path / "start.png"), "--prompt", "a blue square",
           "--seed", "3", "--steps", "4", "--cfg-scale", "7.5", "--sampler", "euler_ancestral"]  # fmt: skip
    assert main(["img2img", *cli, "--strength", "0.5", "--out", str(tmp_path / "edited.png")]) == 0
    assert main(["inpaint", *cli, "--mask", str(tmp_path / "mask.png"), "--strength", "0.8",
                 "--out", str(tmp_path / "repainted.png")]) == 0  # fmt: skip
    assert png_bytes(edited.json["images"][0]) == (tmp_path / "edited.png").read_bytes()
    assert png_bytes(repainted.json["images"][0]) == (tmp_path / "repainted.png").read_bytes()
    assert "Denoising strength: 0.5," in edited.images[0].info["parameters"]
    assert "Denoising strength: 0.8, Mask: yes," in repainted.images[0].info["parameters"]
    assert edited.parameters["init_images"] is None  # not echoed back unless include_init_images


def test_img2img_resizes_the_image_to_the_requested_size_and_inverts_masks(url):
    image = "data:image/png;base64," + png_b64(Image.new("RGB", (50, 30), "red"))
    body = {"init_images": [image], "mask": image, "inpainting_mask_invert": 1, "width": 24, "height": 16, "steps": 2}
    for resize_mode in (0, 1):
        response = post(url, "img2img", body | {"resize_mode": resize_mode})
        assert response.status_code == 200, response.text
        assert Image.open(io.BytesIO(png_bytes(response.json()["images"][0]))).size == (24, 16)


def start_in_background(url: str, body: dict, path: str = "txt2img", **kwargs) -> tuple[threading.Thread, dict]:
    answer = {}

    def send():
        try:
            answer["response"] = post(url, path, body, **kwargs)
        except requests.RequestException as e:
            answer["error"] = e

    thread = threading.Thread(target=send)
    thread.start()
    return thread, answer


def wait_for(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def progress(url: str, **params) -> dict:
    return requests.get(f"{url}/sdapi/v1/progress", params=params, timeout=10).json()


def test_progress_shows_step_eta_and_preview_and_interrupt_stops_only_the_running_request(url):
    long, long_answer = start_in_background(url, {"steps": 300, "force_task_id": "long"})
    running = wait_for(lambda: (p := progress(url))["state"]["sampling_step"] >= 2 and p, what="the long request")
    queued, queued_answer = start_in_background(url, {"steps": 2, "width": 16, "height": 16, "seed": 5})
    wait_for(lambda: progress(url, skip_current_image=True)["state"]["job_count"] == 2, what="the second in queue")

    state = running["state"]
    assert (state["task_id"], state["job"], state["sampling_steps"]) == ("long", "txt2img", 300)
    assert 0 < running["progress"] < 0.1 and running["eta_relative"] > 0
    preview = Image.open(io.BytesIO(png_bytes(running["current_image"])))
    assert preview.size == (64, 64)  # the VAE's decode of the current x0 estimate

    assert requests.post(f"{url}/sdapi/v1/interrupt", timeout=10).json() == {"interrupted": True}
    long.join(timeout=30)
    queued.join(timeout=30)
    assert long_answer["response"].status_code == 409
    assert long_answer["response"].json()["detail"].startswith("interrupted at step")
    assert queued_answer["response"].status_code == 200  # the waiting request was not touched
    assert json.loads(queued_answer["response"].json()["info"])["seed"] == 5
    idle = progress(url)
    assert (idle["progress"], idle["state"]["job_count"], idle["current_image"]) == (0.0, 0, None)


def test_inpainting_previews_show_the_kept_pixels(url):
    image, mask = Image.new("RGB", (32, 16), (200, 30, 30)), Image.new("L", (32, 16), 0)
    mask.paste(255, (0, 0, 16, 16))  # repaint the left half, keep the right
    body = {"init_images": [png_b64(image)], "mask": png_b64(mask), "steps": 300, "force_task_id": "inpaint"}
    thread, answer = start_in_background(url, body, path="img2img")
    running = wait_for(lambda: (p := progress(url))["current_image"] and p["state"]["task_id"] == "inpaint" and p)
    requests.post(f"{url}/sdapi/v1/interrupt", timeout=10)
    thread.join(timeout=30)
    assert answer["response"].status_code == 409
    preview = np.asarray(Image.open(io.BytesIO(png_bytes(running["current_image"]))))
    assert preview.shape == (16, 32, 3)
    assert (preview[:, 16:] == (200, 30, 30)).all()  # as the result will keep them
    assert not (preview[:, :16] == (200, 30, 30)).all()  # the model's current guess


def test_a_client_that_hangs_up_has_its_request_stopped(url):
    # 300 steps take several seconds; the server notices the closed connection within half a second.
    thread, answer = start_in_background(url, {"steps": 300, "force_task_id": "gone"}, timeout=1.0)
    thread.join()
    assert isinstance(answer["error"], requests.Timeout)
    wait_for(lambda: progress(url)["state"]["job_count"] == 0, timeout=3.0, what="the abandoned request to stop")


def test_models_are_listed_and_switched_by_options_and_override_settings(url):
    api = webuiapi.WebUIApi(baseurl=f"{url}/sdapi/v1")
    assert {"tiny", "tiny-b"} <= set(api.util_get_model_names())
    assert api.util_get_current_model() == "tiny"
    try:
        api.util_set_model("tiny-b")
        assert api.util_get_current_model() == "tiny-b"
        made = api.txt2img(steps=1, width=16, height=16)
        assert "Model: tiny-b," in made.images[0].info["parameters"]
        assert made.info["sd_model_name"] == "tiny-b"
        body = {"steps": 1, "width": 16, "height": 16, "override_settings": {"sd_model_checkpoint": "tiny"}}
        made = post(url, "txt2img", body).json()
        assert json.loads(made["info"])["sd_model_name"] == "tiny"
        assert api.util_get_current_model() == "tiny"  # one model stays loaded: the last one asked for
    finally:
        post(url, "options", {"sd_model_checkpoint": "tiny"})
    missing = post(url, "options", {"sd_model_checkpoint": "sd15"})
    assert missing.status_code == 422 and "no model titled 'sd15'; available: tiny," in missing.json()["detail"]
    unknown = post(url, "options", {"samples_save": True})
    assert unknown.status_code == 422 and unknown.json()["detail"].startswith("samples_save: not settable")


def test_every_listed_sampler_and_schedule_runs(url):
    samplers = requests.get(f"{url}/sdapi/v1/samplers", timeout=10).json()
    assert [s["name"] for s in samplers] == list(A1111_SAMPLERS.values())
    schedulers = requests.get(f"{url}/sdapi/v1/schedulers", timeout=10).json()
    assert [s["label"] for s in schedulers] == ["Automatic", "Karras"]
    for sampler in samplers:
        for scheduler in schedulers:
            body = {"sampler_name": sampler["name"], "scheduler": scheduler["name"], "steps": 2, "width": 8}
            info = json.loads(post(url, "txt2img", body).json()["info"])
            assert (info["sampler_name"], info["scheduler"]) == (sampler["name"], scheduler["label"])
    # A1111 before 1.9 named the schedule inside the sampler; our own names work too.
    info = json.loads(post(url, "txt2img", {"sampler_name": "Euler a Karras", "steps": 1, "width": 8}).json()["info"])
    assert "Sampler: Euler a, Schedule type: Karras," in info["infotexts"][0]
    info = json.loads(post(url, "txt2img", {"sampler_index": "heun", "steps": 1, "width": 8}).json()["info"])
    assert info["sampler_name"] == "Heun"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("txt2img", b"{not json", 422, "body: not valid JSON"),
        ("txt2img", b"[1, 2]", 422, "body: expected a JSON object"),
        ("txt2img", {"width": 4096}, 422, "width: 4096 is over this server's limit of 128 (latentdiff serve --max-w"),
        ("txt2img", {"height": 4096}, 422, "height: 4096 is over this server's limit of 128"),
        ("txt2img", {"steps": 100000}, 422, "steps: 100000 is over this server's limit of 400"),
        ("txt2img", {"batch_size": 5, "n_iter": 2}, 422, "batch_size * n_iter: 10 is over this server's limit of 8"),
        ("txt2img", {"steps": 0}, 422, "steps: Input should be greater than or equal to 1"),
        ("txt2img", {"width": 33, "height": 32}, 422, "height and width must be positive multiples of 2, got 32x33"),
        ("txt2img", {"sampler_name": "LMS"}, 422, "sampler_name: unknown sampler 'LMS'; choose one of 'Euler',"),
        ("txt2img", {"scheduler": "Beta"}, 422, "scheduler: unknown scheduler 'Beta'; choose 'Automatic' or 'Karras'"),
        ("txt2img", {"enable_hr": True}, 422, "enable_hr: hires fix is not supported by latentdiff"),
        ("txt2img", {"override_settings": {"CLIP_stop_at_last_layers": 2}}, 422, "override_settings: only sd_model"),
        ("txt2img", {"seed": -5}, 422, "seed: Input should be greater than or equal to -1"),
        ("img2img", {"prompt": "x"}, 422, "init_images: Field required"),
        ("img2img", {"init_images": ["%%%"]}, 422, "init_images[0]: not valid base64"),
        ("img2img", {"init_images": [b64(b"not an image")]}, 422, "init_images[0]: not a readable image"),
        ("img2img", {"init_images": [b64(b"\x89PNG\r\n\x1a\n")]}, 422, "init_images[0]: not a readable image"),
        (
            "img2img",
            {"init_images": ["data:image/png;base64,"], "denoising_strength": 2},
            422,
            "denoising_strength: Input should be less than or equal to 1",
        ),  # fmt: skip
        ("png-info", {"image": "???"}, 422, "image: not valid base64"),
        ("txt2img", {"prompt": "x" * (3 * 2**20)}, 413, "request body is over 2 MiB (latentdiff serve --max-body-mb)"),
    ],
)
def test_bad_requests_get_a_one_line_4xx_and_the_server_keeps_serving(url, path, body, status, message):
    as_json = {"Content-Type": "application/json"}
    kwargs = {"json": body} if isinstance(body, dict) else {"data": body, "headers": as_json}
    response = requests.post(f"{url}/sdapi/v1/{path}", timeout=60, **kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    assert message in detail
    assert post(url, "txt2img", {"steps": 1, "width": 8, "height": 8}).status_code == 200


def test_a_huge_image_is_refused_before_it_is_decoded(url):
    buffer = io.BytesIO()
    Image.new("1", (5000, 5000)).save(buffer, format="PNG")  # 25 Mpx in a few kB
    response = post(url, "img2img", {"init_images": [b64(buffer.getvalue())]})
    assert response.status_code == 422
    assert response.json()["detail"] == "init_images[0]: 5000x5000 is over the 16777216 pixels accepted"


def test_fifty_concurrent_requests_all_complete(url):
    def generate(seed: int) -> tuple[int, int]:
        body = {"prompt": f"shape {seed}", "seed": seed, "steps": 2, "width": 16, "height": 16}
        response = post(url, "txt2img", body)
        return response.status_code, json.loads(response.json()["info"])["seed"]

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(generate, range(50)))
    assert answers == [(200, seed) for seed in range(50)]  # none lost, none swapped
    assert progress(url)["state"]["job_count"] == 0


def test_png_info_reads_back_what_the_server_wrote(url):
    made = post(url, "txt2img", {"prompt": "a green triangle", "seed": 9, "steps": 1, "width": 24, "height": 8}).json()
    info = post(url, "png-info", {"image": made["images"][0]}).json()
    assert info["info"] == json.loads(made["info"])["infotexts"][0]
    assert {k: info["parameters"][k] for k in ("Prompt", "Seed", "Size-1", "Size-2", "Model")} == {
        "Prompt": "a green triangle", "Seed": "9", "Size-1": "24", "Size-2": "8", "Model": "tiny"}  # fmt: skip
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG")
    no_parameters = post(url, "png-info", {"image": b64(buffer.getvalue())}).json()
    assert no_parameters == {"info": "", "items": {}, "parameters": {}}


def test_docs_and_the_page_are_served(url):
    paths = requests.get(f"{url}/openapi.json", timeout=10).json()["paths"]
    for path in ("txt2img", "img2img", "progress", "interrupt", "samplers", "sd-models", "options", "png-info"):
        assert f"/sdapi/v1/{path}" in paths
    docs = requests.get(f"{url}/docs", timeout=10).text
    assert "/static-offline-docs/swagger-ui-bundle.js" in docs  # served from here, no CDN
    assert requests.get(f"{url}/static-offline-docs/swagger-ui-bundle.js", timeout=10).status_code == 200
    page = requests.get(url, timeout=10).text
    assert 'id="prompt"' in page and 'src="app.js"' in page
    assert requests.get(f"{url}/app.js", timeout=10).status_code == 200


def test_api_key_is_required_when_set(models):
    with running_server(ServeOptions(models["tiny"], api_key="s3cret", limits=LIMITS)) as url:
        refused = requests.get(f"{url}/sdapi/v1/options", timeout=10)
        assert refused.status_code == 401 and "missing or wrong API key" in refused.json()["detail"]
        wrong = requests.get(f"{url}/sdapi/v1/options", headers={"Authorization": "Bearer guess"}, timeout=10)
        assert wrong.status_code == 401
        right = requests.get(f"{url}/sdapi/v1/options", headers={"Authorization": "Bearer s3cret"}, timeout=10)
        assert right.status_code == 200
        api = webuiapi.WebUIApi(baseurl=f"{url}/sdapi/v1", username="anyone", password="s3cret")  # HTTP Basic
        assert api.txt2img(steps=1, width=8, height=8).images[0].size == (8, 8)
        assert requests.get(url, timeout=10).status_code == 200  # the page itself holds no secrets


def test_no_previews_leaves_current_image_empty(models):
    with running_server(ServeOptions(models["tiny"], previews=False, limits=LIMITS)) as url:
        thread, answer = start_in_background(url, {"steps": 300})
        wait_for(lambda: progress(url)["state"]["sampling_step"] >= 2, what="the request to run")
        assert progress(url)["current_image"] is None
        requests.post(f"{url}/sdapi/v1/interrupt", timeout=10)
        thread.join(timeout=30)
        assert answer["response"].status_code == 409


def test_serve_command_reports_a_bad_model_in_one_line(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "nothing"), "--port", "0"]) == 2
    assert capsys.readouterr().err == f"latentdiff: error: {tmp_path / 'nothing'}: no such file or folder\n"


def test_the_built_in_model_is_served_with_the_clis_defaults(models, tmp_path, monkeypatch):
    """No steps, sampler, schedule or CFG in the request: the built-in model's (guidance interval
    included), the same PNG bytes as `latentdiff generate` without --model."""
    from latentdiff import cli
    from latentdiff.serve import catalogue
    from latentdiff.serve.generate import Generation, run
    from latentdiff.weights import load

    monkeypatch.setattr(cli, "BUILTIN_MODEL", models["tiny"])
    monkeypatch.setattr(catalogue, "BUILTIN_MODEL", models["tiny"].resolve())
    entry = catalogue.ModelEntry("tiny", models["tiny"])
    request = Generation(mode="txt2img", prompt="a red circle", negative_prompt="", steps=None, seed=5, batch_size=1,
                         n_iter=1, sampler=None, karras=None, cfg_scale=None, width=16, height=16)  # fmt: skip
    served = run(load(models["tiny"]), entry, request, LIMITS, on_step=lambda i, step: None)
    args = ["generate", "--prompt", "a red circle", "--seed", "5", "--width", "16", "--height", "16"]
    assert main([*args, "--out", str(tmp_path / "x.png")]) == 0
    assert base64.b64decode(served["images"][0]) == (tmp_path / "x.png").read_bytes()
    assert ("Steps: 16, Sampler: Euler, Schedule type: Karras, CFG scale: 2.5, CFG max sigma: 15.0, Seed: 5,"
            in served["info"]["infotexts"][0])  # fmt: skip
