"""`POST /latentdiff/v1/explain`: the explainer's report over HTTP, queued behind generations like one.

One real server (uvicorn on loopback) with a tiny random model, as in test_server.py; tiny step counts.
"""

from __future__ import annotations

import re
import threading

import pytest
import requests

from latentdiff.serve.settings import Limits, ServeOptions
from tests.serving import running_server, save_tiny_model
from tests.test_server import progress, start_in_background, wait_for

LIMITS = Limits(max_width=128, max_height=128, max_steps=400, max_images=8, max_body_mb=2)
QUICK = {"steps": 2, "scales": [1, 2]}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def url(model):
    with running_server(ServeOptions(model, limits=LIMITS)) as url:
        yield url


def explain(url: str, body: dict, **kwargs) -> requests.Response:
    return requests.post(f"{url}/latentdiff/v1/explain", json=body, timeout=120, **kwargs)


def settings_line(report: str) -> str:
    """The report's first paragraph: the settings it ran with ("seed 3, steps 2, sampler euler, ...")."""
    return re.search(r"<p>(.*?)</p>", report).group(1)


def test_the_report_comes_back_as_one_self_contained_html_page(url):
    body = {"prompt": "a red circle", "seed": 3, "sampler_name": "Euler", "cfg_scale": 4, "swap": "circle=square"}
    response = explain(url, body | QUICK)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    report = response.text
    assert "<h1>a red circle</h1>" in report
    assert "data:image/png;base64," in report and "data:image/gif;base64," in report
    assert settings_line(report).startswith("seed 3, steps 2, sampler euler, guidance_scale 4.0, negative_prompt , "
                                            "scales (1.0, 2.0), swap circle=square,")  # fmt: skip
    assert "One word changed" in report
    assert "denoising.mp4" not in report  # no MP4 is written, so none is linked
    assert re.search(r'src="(?!data:)', report) is None  # every image inline: nothing to fetch


def test_defaults_are_the_loaded_models_and_seed_minus_one_draws_one(url):
    report = explain(url, {"prompt": "a square", "seed": -1} | QUICK).text
    line = settings_line(report)
    seed = int(re.match(r"seed (\d+),", line).group(1))
    assert 0 <= seed < 2**32 - 1
    # Not the built-in model, so the CLI's other defaults; no colour in the prompt, so no default swap.
    assert "sampler euler_ancestral, guidance_scale 7.5," in line and "swap None," in line
    red = settings_line(explain(url, {"prompt": "a red square"} | QUICK).text)
    assert red.startswith("seed 0,") and "swap red=" in red  # a shapes colour: swapped for the next one


@pytest.mark.parametrize(
    "body, message",
    [
        ({"prompt": ""}, "prompt: must not be empty"),
        ({"prompt": "   "}, "prompt: must not be empty"),
        ({"steps": 2}, "prompt: Field required"),
        ({"prompt": "a red circle", "swap": "cat=dog"}, "swap: the word 'cat' is not in the prompt 'a red circle'"),
        ({"prompt": "a red circle", "swap": "red"}, "swap wants OLD=NEW with two different words, got 'red'"),
        ({"prompt": "a red circle", "steps": 100000}, "steps: 100000 is over this server's limit of 400 (latentdiff"),
        ({"prompt": "a red circle", "steps": 0}, "steps: Input should be greater than or equal to 1"),
        ({"prompt": "a red circle", "scales": [1] * 9}, "scales: 9 scales is over this server's limit of 8 images"),
        ({"prompt": "a red circle", "scales": []}, "scales: List should have at least 1 item"),
        ({"prompt": "a red circle", "sampler_name": "LMS"}, "sampler_name: unknown sampler 'LMS'; choose one of"),
        ({"prompt": "a red circle", "sampler_name": "Euler a Karras"}, "sampler_name: explain draws the default sig"),
        ({"prompt": "a red circle", "scheduler": "Karras"}, "scheduler: explain draws the default sigma spacing"),
        ({"prompt": "a red circle", "seed": -2}, "seed: Input should be greater than or equal to -1"),
    ],
)
def test_bad_requests_get_a_one_line_422(url, body, message):
    response = explain(url, body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    assert message in detail


def test_it_waits_in_the_worker_queue_and_interrupt_stops_it(url):
    long, long_answer = start_in_background(url, {"steps": 300, "force_task_id": "long"})
    wait_for(lambda: progress(url)["state"]["task_id"] == "long", what="the long txt2img to run")
    answer = {}
    body = {"prompt": "a red circle", "steps": 40, "scales": [1]}  # about a second of sampling on one core
    queued = threading.Thread(target=lambda: answer.update(response=explain(url, body)))
    queued.start()
    wait_for(lambda: progress(url, skip_current_image=True)["state"]["job_count"] == 2, what="explain to queue")
    assert progress(url, skip_current_image=True)["state"]["job"] == "txt2img"  # explain waits its turn
    requests.post(f"{url}/sdapi/v1/interrupt", timeout=10)
    long.join(timeout=30)
    assert long_answer["response"].status_code == 409

    wait_for(lambda: progress(url, skip_current_image=True)["state"]["job"] == "explain", what="explain to run")
    assert requests.post(f"{url}/sdapi/v1/interrupt", timeout=10).json() == {"interrupted": True}
    queued.join(timeout=60)
    response = answer["response"]
    assert response.status_code == 409 and response.json()["detail"].startswith("interrupted before: ")
    assert progress(url)["state"]["job_count"] == 0
    assert explain(url, {"prompt": "a red circle"} | QUICK).status_code == 200  # the worker goes on


def test_the_api_key_guards_it_when_set(model):
    with running_server(ServeOptions(model, api_key="s3cret", limits=LIMITS)) as url:
        body = {"prompt": "a blue square"} | QUICK
        refused = explain(url, body)
        assert refused.status_code == 401 and "missing or wrong API key" in refused.json()["detail"]
        assert explain(url, body, headers={"Authorization": "Bearer guess"}).status_code == 401
        allowed = explain(url, body, headers={"Authorization": "Bearer s3cret"})
        assert allowed.status_code == 200 and "<h1>a blue square</h1>" in allowed.text
        assert explain(url, body, auth=("anyone", "s3cret")).status_code == 200  # HTTP Basic, as A1111 clients send


def test_the_route_is_in_the_api_docs(url):
    paths = requests.get(f"{url}/openapi.json", timeout=10).json()["paths"]
    answer = paths["/latentdiff/v1/explain"]["post"]["responses"]["200"]["content"]
    assert "text/html" in answer
