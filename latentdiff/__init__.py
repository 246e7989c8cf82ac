"""latentdiff: Stable Diffusion from scratch in PyTorch.

from latentdiff import weights
model = weights.load("path/to/stable-diffusion-v1-5")   # diffusers folder or single file
"""

__version__ = "0.1.0"
