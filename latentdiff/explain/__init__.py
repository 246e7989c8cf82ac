"""Explain a run: the denoising trajectory, per-word cross-attention, guidance, forward diffusion.

    from latentdiff.explain import ExplainSettings, explain
    explain(model, ExplainSettings(prompt="a red circle above a blue square"), Path("explain"))

The pieces are usable alone: trajectory.record (every step of one run), attention.CrossAttentionRecorder
(DAAM-style maps; the image is unchanged), guidance.cfg_sweep / swap_word / divergence, forward.noise_image,
alignment.attention_alignment (do the maps land on the right objects?).
"""

from .attention import CrossAttentionRecorder, word_map, words
from .report import ExplainSettings, Report, explain
from .trajectory import Trajectory, record

__all__ = [
    "CrossAttentionRecorder",
    "ExplainSettings",
    "Report",
    "Trajectory",
    "explain",
    "record",
    "word_map",
    "words",
]
