"""Reading and writing state dicts safely, and loading them into a model strictly.

- safetensors by default; pickled checkpoints (.ckpt/.bin/.pt) only with `allow_pickle=True`, and
  then through `torch.load(weights_only=True)`, which refuses to run arbitrary code.
- Files are written to a temporary name and renamed, so a crash never leaves half a checkpoint.
- `load_into` fails on any missing, unexpected or mis-shaped key with a one-line diff.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import WeightsError

_SHOW = 5  # keys named per category in a mismatch message


def file_format(path: Path) -> str:
    """'safetensors' or 'pickle', judged by the bytes, not the extension."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror})") from None
    if len(head) == 9 and head[8:9] == b"{":  # 8-byte header length, then the JSON header
        return "safetensors"
    if head[:2] == b"PK" or head[:1] == b"\x80":  # zip archive (torch.save) or a raw pickle stream
        return "pickle"
    raise WeightsError(f"{path}: neither a safetensors file nor a PyTorch checkpoint (starts with {head[:8]!r})")


def read_state_dict(path: str | Path, allow_pickle: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a weights file (metadata is empty for pickles)."""
    path = Path(path)
    if file_format(path) == "pickle":
        if not allow_pickle:
            raise WeightsError(
                f"{path}: is a pickled PyTorch checkpoint; pickles can run code when opened. Convert it to "
                "safetensors, or allow it explicitly (--allow-pickle), which loads with torch.load(weights_only=True)"
            )
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for corrupt or unsafe pickles
            raise WeightsError(f"{path}: cannot load as a checkpoint ({str(e).splitlines()[0]})") from None
        # Original SD checkpoints wrap the weights: {"state_dict": {...}, "global_step": ...}
        sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
        if not isinstance(sd, dict):
            raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict")
        return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}, {}
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, metadata
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: corrupt or truncated safetensors file ({e})") from None


def write_state_dict(sd: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Save as safetensors, atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def write_json(obj: dict, path: str | Path) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def current_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


class atomic_path:
    """Context manager giving a temporary sibling path that replaces `path` only on success."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.chmod(self.tmp, 0o666 & ~current_umask())  # mkstemp's 0600, made what open() gives
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def load_into(module: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Copy `sd` into `module` strictly, casting fp16/bf16 weights to the module's dtype.

    On any mismatch raises WeightsError with one line naming `source` and the offending keys.
    """
    normalize = getattr(module, "normalize_state_dict", None)
    sd = normalize(dict(sd)) if normalize else dict(sd)
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [
        f"{k}: model {tuple(expected[k].shape)}, file {tuple(sd[k].shape)}"
        for k in expected
        if k in sd and sd[k].shape != expected[k].shape
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if keys:
            more = f", +{len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
            problems.append(f"{len(keys)} {label} ({'; '.join(keys[:_SHOW])}{more})")
    if problems:
        raise WeightsError(f"{source}: weights do not fit the model: " + ", ".join(problems))
    cast = {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in sd.items()}
    module.load_state_dict(cast, strict=True)
