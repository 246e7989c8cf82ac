"""The models a server can switch between: the built-in one, the one it started with, and a folder's.

A model's title is its folder or file name, which is also what the PNGs record as `Model:` (as the
CLI writes it). The folder is listed afresh on every look-up, so models added while the server runs
show up without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..cli import BUILTIN_MODEL, DEFAULTS
from .codec import RequestError

# Single files `weights.load` reads without --allow-pickle.
_SINGLE_FILE_SUFFIXES = (".safetensors",)


@dataclass(frozen=True)
class ModelEntry:
    title: str
    path: Path

    @property
    def defaults(self) -> dict[str, object]:
        """CFG scale and sampler when a request leaves them out (the CLI's, which differ for the built-in model)."""
        return DEFAULTS["builtin" if self.path.resolve() == BUILTIN_MODEL else "other"]


def _is_model(path: Path) -> bool:
    return (path / "model_index.json").is_file() or (path.is_file() and path.suffix in _SINGLE_FILE_SUFFIXES)


def list_models(startup_model: Path, models_dir: Path | None) -> list[ModelEntry]:
    """The startup model first, then the built-in one, then models_dir's, sorted; one entry per title."""
    candidates = [startup_model, BUILTIN_MODEL]
    if models_dir is not None and models_dir.is_dir():
        candidates += sorted(models_dir.iterdir())
    entries: dict[str, ModelEntry] = {}
    for path in candidates:
        if _is_model(path) and path.name not in entries:
            entries[path.name] = ModelEntry(path.name, path)
    return list(entries.values())


def find_model(title: str, startup_model: Path, models_dir: Path | None) -> ModelEntry:
    entries = list_models(startup_model, models_dir)
    for entry in entries:
        if entry.title == title:
            return entry
    names = ", ".join(entry.title for entry in entries)
    raise RequestError(f"sd_model_checkpoint: no model titled {title!r}; available: {names} (GET /sdapi/v1/sd-models)")
