"""The wire format: AUTOMATIC1111's `/sdapi/v1` request and response fields, as its clients send them.

Clients such as `webuiapi` send every field A1111 knows (hires fix, face restoration, scripts, ...).
Fields latentdiff has no use for at their default values are accepted and ignored; a feature it does
not have, switched on, is refused with a message, so nobody gets an image made without it unawares.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class GenerationRequest(BaseModel):
    """What txt2img and img2img share. Fields not listed here are ignored."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = Field(-1, ge=-1, lt=2**63, description="-1: a random seed; image i of the request uses seed + i")
    sampler_name: str | None = Field(None, description="A1111's name ('Euler a', 'DPM++ 2M', ...) or ours")
    sampler_index: str | None = Field(None, description="older name of sampler_name; used when that is absent")
    scheduler: str | None = Field(None, description="'Automatic' or 'Karras'")
    batch_size: int = Field(1, ge=1, description="images per pipeline run")
    n_iter: int = Field(1, ge=1, description="pipeline runs, one after the other")
    steps: int | None = Field(None, ge=1, description="default: 16 for the built-in model, 20 otherwise")
    cfg_scale: float | None = Field(None, description="default: 2.5 for the built-in model, 7.5 otherwise")
    width: int | None = Field(None, ge=1, description="pixels; default: the model's native size (img2img: the image's)")
    height: int | None = Field(None, ge=1)
    override_settings: dict[str, Any] = Field(default_factory=dict, description="only sd_model_checkpoint")
    send_images: bool = True
    force_task_id: str | None = Field(None, max_length=100, description="shown as state.task_id by /progress")

    # A1111 features latentdiff does not have: accepted only when off.
    enable_hr: bool = False
    restore_faces: bool | None = False
    tiling: bool | None = False
    subseed_strength: float = 0.0
    styles: list[str] = Field(default_factory=list)
    script_name: str | None = None
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _refuse_missing_features(self):
        switched_on = {
            "enable_hr": "hires fix",
            "restore_faces": "face restoration",
            "tiling": "tiling",
            "subseed_strength": "variation seeds",
            "styles": "prompt styles",
            "script_name": "scripts",
            "alwayson_scripts": "scripts",
        }
        for field, feature in switched_on.items():
            if getattr(self, field):
                raise ValueError(f"{field}: {feature} is not supported by latentdiff; leave it unset")
        unknown = set(self.override_settings) - {"sd_model_checkpoint"}
        if unknown:
            raise ValueError(
                f"override_settings: only sd_model_checkpoint is supported, got {', '.join(sorted(unknown))}"
            )
        return self


class Txt2ImgRequest(GenerationRequest):
    """txt2img: text to images (its own name in the OpenAPI docs)."""


class Img2ImgRequest(GenerationRequest):
    """img2img; with `mask`, inpainting (white repaints, black keeps)."""

    init_images: list[str] = Field(min_length=1, max_length=1, description="one base64 PNG/JPEG (data: URL or raw)")
    mask: str | None = Field(None, description="base64 image; white = repaint")
    denoising_strength: float = Field(0.75, ge=0, le=1, description="0 keeps the image, 1 ignores it")
    resize_mode: int = Field(
        0, ge=0, le=1, description="0: resize to width x height; 1: crop to its aspect, then resize"
    )
    inpainting_mask_invert: int = Field(0, ge=0, le=1, description="1: black repaints, white keeps")
    include_init_images: bool = Field(False, description="echo init_images and mask back in `parameters`")


class GenerationResponse(BaseModel):
    images: list[str] = Field(description="base64 PNGs, each with its A1111 `parameters` text chunk")
    parameters: dict[str, Any] = Field(description="the request as received")
    info: str = Field(description="JSON: seeds, prompts, infotexts (each image's parameters text), ...")


class ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool = False
    job: str = ""
    job_count: int = Field(0, description="requests running or waiting")
    job_timestamp: str = "0"
    job_no: int = Field(0, description="which of the request's n_iter runs")
    sampling_step: int = 0
    sampling_steps: int = 0
    task_id: str | None = Field(None, description="the running request's force_task_id (or a generated one)")


class ProgressResponse(BaseModel):
    progress: float = Field(description="fraction of the running request done, 0..1")
    eta_relative: float = Field(description="seconds left for the running request (estimate)")
    state: ProgressState
    current_image: str | None = Field(None, description="base64 PNG preview of the current estimate")
    textinfo: str | None = None


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float = -1
    need_inner_model: bool = False


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str
    config: str | None = None


class ScriptsList(BaseModel):
    txt2img: list[str]
    img2img: list[str]


class PNGInfoRequest(BaseModel):
    image: str = Field(description="base64 PNG (data: URL or raw)")


class PNGInfoResponse(BaseModel):
    info: str = Field(description="the `parameters` text chunk, empty when there is none")
    items: dict[str, str] = Field(description="the PNG's other text chunks")
    parameters: dict[str, str] = Field(description="info parsed: Prompt, Negative prompt, Steps, Sampler, ...")
