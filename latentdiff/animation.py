"""Animations from a list of frames: GIF (Pillow) and MP4 (H.264 through imageio-ffmpeg's ffmpeg).

Both are written to a temporary sibling and renamed, like every file latentdiff writes. MP4 needs
even frame sides (yuv420p halves the colour planes), so frames are padded with white to a multiple
of 16 (the H.264 macroblock) on the right and bottom.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from .weights.io import atomic_path


def write_gif(frames: list[Image.Image], path: str | Path, ms_per_frame: int = 200, hold_last_ms: int = 1200) -> None:
    """An endlessly looping GIF; the last frame stays up for `hold_last_ms`."""
    if not frames:
        raise ValueError("an animation needs at least one frame")
    durations = [ms_per_frame] * (len(frames) - 1) + [hold_last_ms]
    with atomic_path(Path(path)) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)


def write_mp4(frames: list[Image.Image], path: str | Path, fps: float = 5, hold_last_s: float = 1.0) -> None:
    """An H.264 MP4 that plays in browsers; the last frame is repeated for `hold_last_s` seconds."""
    import imageio_ffmpeg  # a wheel with a static ffmpeg binary, so no system ffmpeg is needed

    if not frames:
        raise ValueError("an animation needs at least one frame")
    width, height = (-(-side // 16) * 16 for side in frames[0].size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # ffmpeg picks the container from the name, so the temporary file keeps the .mp4 suffix.
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".mp4", dir=path.parent)
    os.close(fd)
    try:
        writer = imageio_ffmpeg.write_frames(name, (width, height), fps=fps, codec="libx264", macro_block_size=16,
                                             ffmpeg_log_level="error")  # fmt: skip
        writer.send(None)
        padded = [_pad(frame, width, height) for frame in frames]
        for frame in padded + [padded[-1]] * max(0, round(hold_last_s * fps) - 1):
            writer.send(frame.tobytes())
        writer.close()
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)


def _pad(frame: Image.Image, width: int, height: int) -> np.ndarray:
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(frame.convert("RGB"), (0, 0))
    return np.ascontiguousarray(np.asarray(canvas, dtype=np.uint8))
