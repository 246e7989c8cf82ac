"""Load and save the original single-file checkpoint (what A1111 and ComfyUI users hold).

Such files carry no config: it is inferred from the tensors' shapes. Files we write record our
config in the safetensors metadata (`latentdiff_config`), so they load back exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import ConfigError, SDConfig
from ..model import StableDiffusion
from .errors import WeightsError
from .io import load_into, read_state_dict, write_state_dict
from .single_file import detect_text_layout, from_single_file, infer_config, to_single_file

CONFIG_KEY = "latentdiff_config"


def text_layout_of(config: SDConfig) -> str:
    """OpenCLIP-trained text towers (SD 2.x) use exact GELU; OpenAI's (SD 1.x) use quick_gelu."""
    return "openclip" if config.text.hidden_act == "gelu" else "openai"


def load_single_file(path: str | Path, allow_pickle: bool = False, use_ema: bool = False) -> StableDiffusion:
    path = Path(path)
    sd, metadata = read_state_dict(path, allow_pickle=allow_pickle)
    try:
        if CONFIG_KEY in metadata:
            config = SDConfig.from_dict(json.loads(metadata[CONFIG_KEY]))
        else:
            config = infer_config(sd)
        layout = detect_text_layout(sd)
        unet, vae, text = from_single_file(sd, config, text_layout=layout, use_ema=use_ema)
    except (ConfigError, WeightsError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path}: {e}") from None
    model = StableDiffusion(config)
    if layout == "openclip":
        # SD 2.x's tokenizer pads with "!" (id 0) where SD 1.x's pads with <|endoftext|>.
        model.tokenizer.pad_token_id = 0
    for name, part in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        load_into(getattr(model, name), part, f"{path} ({name})")
    return model.eval()


def save_single_file(model: StableDiffusion, path: str | Path) -> None:
    config = model.config
    sd = to_single_file(
        model.unet.state_dict(),
        model.vae.state_dict(),
        model.text_encoder.state_dict(),
        config,
        text_layout=text_layout_of(config),
    )
    write_state_dict(sd, path, metadata={"format": "pt", CONFIG_KEY: json.dumps(config.to_dict())})
