"""Named emoji (Google Noto art) as a small captioned image set.

Source: npm `emoji-datasource-google@16.0.0` (installed by `latentdiff data prepare emoji`): its
`emoji.json` names every emoji, and `img/google/64/<image>` is the 64x64 RGBA art.

    emoji = load_emoji()                       # EmojiSet: images (N, 64, 64, 3) uint8 on white
    train_idx, heldout_idx = split(emoji)      # held out by emoji name, fixed by the seed
    caption(emoji, 0)                          # "an emoji of a grinning face"

Only base emoji are kept: the skin-tone variants (each entry's `skin_variations`) and the five
skin-tone swatches (subcategory "skin-tone") would give several near-identical images one caption
that cannot tell them apart. The art has a transparent background; it is composited on white, the
background a generated emoji is asked for.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from latentdiff.data.sources import (
    NPM_SOURCES,
    DataCorruptError,
    DataMissingError,
    cache_dir,
    install_command,
    npm_package,
    sha256_of,
)

PACKAGE = NPM_SOURCES["emoji"].package
VERSION = NPM_SOURCES["emoji"].version
NATIVE_SIZE = 64  # the folder we read: img/google/64

# For the model card of anything trained on this set.
IMAGE_LICENSE = "Apache-2.0"
IMAGE_ATTRIBUTION = "Emoji art: Noto Emoji by Google (https://github.com/googlefonts/noto-emoji), Apache License 2.0"
METADATA_LICENSE = "MIT"
METADATA_ATTRIBUTION = (
    f"Emoji names and categories: emoji-datasource {VERSION} by Cal Henderson (iamcal, "
    "https://github.com/iamcal/emoji-data), MIT License"
)
ATTRIBUTION = f"{IMAGE_ATTRIBUTION}. {METADATA_ATTRIBUTION}."

# Caption templates. `caption(..., rng=None)` always gives BASE_TEMPLATE; with an rng it keeps the
# base with probability `p_base`, else picks one of VARIANT_TEMPLATES uniformly (the {tag} one only
# when the emoji has a tag that is not just its name; otherwise it falls back to the base).
#   {a}        "a" or "an", by the first letter of the name
#   {name}     lowercase Unicode/CLDR-style name, e.g. "grinning face"
#   {tag}      one of the short names with "_"/"-" as spaces, e.g. "grinning"
#   {category} lowercase category, e.g. "smileys & emotion"
#   {sub}      subcategory with "-" as spaces, e.g. "face smiling" ({a_sub}: its article)
BASE_TEMPLATE = "an emoji of {a} {name}"
VARIANT_TEMPLATES = (
    "{a} {name} emoji",
    "an emoji of {a} {name}, {tag}",
    "an emoji of {a} {name}, from {category}",
    "{a} {name}, {a_sub} {sub} emoji",
)

CACHE_FORMAT = 1  # bump when the arrays stored in the .npz change meaning


@dataclass
class EmojiSet:
    """N emoji, index-aligned: images[i] is the art of names[i]."""

    images: np.ndarray  # (N, H, W, 3) uint8, RGB on white
    names: list[str]  # lowercase, e.g. "grinning face"
    categories: list[str]  # e.g. "Smileys & Emotion"
    subcategories: list[str]  # e.g. "face-smiling"
    tags: list[tuple[str, ...]]  # short names, "_"/"-" as spaces, e.g. ("grinning",)
    codes: list[str]  # Unicode code points, e.g. "1F600": a stable id per emoji

    def __len__(self) -> int:
        return len(self.names)


# --- reading the package ------------------------------------------------------------------------


def base_entries(index: list[dict]) -> list[dict]:
    """The entries of emoji.json we train on: base emoji with Google art, skin-tone swatches dropped.

    Skin-tone variants are never separate entries (they sit in each entry's `skin_variations`), so
    ignoring that field is what excludes them.
    """
    keep = [e for e in index if e.get("has_img_google") and e.get("subcategory") != "skin-tone"]
    return sorted(keep, key=lambda e: (e.get("sort_order", 0), e["unified"]))


def _tags(entry: dict) -> tuple[str, ...]:
    return tuple(s.replace("_", " ").replace("-", " ") for s in entry.get("short_names") or [entry["short_name"]])


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 straight-alpha RGBA -> (H, W, 3) uint8 RGB over white: rgb*a + 255*(1-a), rounded."""
    rgb = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:4].astype(np.uint32)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _read_image(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            rgb = composite_on_white(np.asarray(im.convert("RGBA")))
    except OSError as e:
        raise DataCorruptError(f"cannot read emoji image {path}: {e}") from e
    if size != rgb.shape[0] or size != rgb.shape[1]:
        # Composite first, then resample: resampling straight alpha would bleed the colour of
        # transparent pixels into the edges.
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.LANCZOS))
    return rgb


def read_emoji(root: Path, size: int = NATIVE_SIZE) -> EmojiSet:
    """Read the base emoji straight from an emoji-datasource-google folder (no cache)."""
    index = json.loads((root / "emoji.json").read_text(encoding="utf-8"))
    entries = base_entries(index)
    images = np.stack([_read_image(root / "img" / "google" / str(NATIVE_SIZE) / e["image"], size) for e in entries])
    return EmojiSet(
        images=images,
        names=[e["name"].lower() for e in entries],
        categories=[e["category"] for e in entries],
        subcategories=[e["subcategory"] for e in entries],
        tags=[_tags(e) for e in entries],
        codes=[e["unified"] for e in entries],
    )


# --- the .npz cache -----------------------------------------------------------------------------


def cache_path(size: int) -> Path:
    return cache_dir() / "emoji" / f"{PACKAGE}-{VERSION}-{size}px.npz"


def _save(path: Path, emoji: EmojiSet, source_sha256: str) -> None:
    """Write to a temporary file beside `path`, then rename: a crash never leaves half a cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(
                f,
                format=np.array(CACHE_FORMAT),
                source_sha256=np.array(source_sha256),
                images=emoji.images,
                names=np.array(emoji.names, dtype=str),
                categories=np.array(emoji.categories, dtype=str),
                subcategories=np.array(emoji.subcategories, dtype=str),
                tags=np.array(["|".join(t) for t in emoji.tags], dtype=str),
                codes=np.array(emoji.codes, dtype=str),
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path, source_sha256: str) -> EmojiSet | None:
    """The cached set, or None when there is none or it was built from a different emoji.json."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != CACHE_FORMAT or str(z["source_sha256"]) != source_sha256:
                return None
            return EmojiSet(
                images=z["images"],
                names=z["names"].tolist(),
                categories=z["categories"].tolist(),
                subcategories=z["subcategories"].tolist(),
                tags=[tuple(t.split("|")) if t else () for t in z["tags"].tolist()],
                codes=z["codes"].tolist(),
            )
    except (OSError, KeyError, ValueError):  # absent or unreadable: rebuild it
        return None


def load_emoji(size: int = NATIVE_SIZE, root: Path | None = None, cache: bool = True) -> EmojiSet:
    """All base emoji at `size` x `size`, from the installed npm package (DataMissingError if absent).

    `root` overrides the package folder (default <cache>/npm/node_modules/emoji-datasource-google).
    The decoded set is cached as an .npz in the cache folder, keyed by size and by the sha256 of
    emoji.json, so a changed package rebuilds it.
    """
    root = npm_package(PACKAGE, VERSION) if root is None else root
    if not (root / "emoji.json").is_file():
        raise DataMissingError(f"{root / 'emoji.json'} is missing; run: {install_command('emoji')}")
    source_sha256 = sha256_of(root / "emoji.json")
    path = cache_path(size)
    if cache and (emoji := _load(path, source_sha256)) is not None:
        return emoji
    emoji = read_emoji(root, size)
    if cache:
        _save(path, emoji, source_sha256)
    return emoji


# --- split and captions -------------------------------------------------------------------------


def split(emoji: EmojiSet, heldout_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, heldout_idx): a seeded split by emoji name, so no held-out name is ever trained on.

    Entries sharing a name (emoji.json has a few) fall on the same side. The split depends only on
    the set of names and the seed, not on their order.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    names = sorted(set(emoji.names))
    order = np.random.default_rng(seed).permutation(len(names))
    heldout_names = {names[i] for i in order[: round(heldout_fraction * len(names))]}
    heldout = np.array([n in heldout_names for n in emoji.names], dtype=bool)
    return np.flatnonzero(~heldout), np.flatnonzero(heldout)


def _article(word: str) -> str:
    return "an" if word[:1] and word[0] in "aeiou" else "a"


def caption(emoji: EmojiSet, i: int, rng: np.random.Generator | None = None, p_base: float = 0.5) -> str:
    """A caption for emoji `i`: BASE_TEMPLATE without an rng, else a seeded mix of the templates above."""
    name = emoji.names[i]
    tags = [t for t in emoji.tags[i] if t != name]
    sub = emoji.subcategories[i].replace("-", " ")
    template = BASE_TEMPLATE
    if rng is not None and rng.random() >= p_base:
        template = VARIANT_TEMPLATES[int(rng.integers(len(VARIANT_TEMPLATES)))]
        if "{tag}" in template and not tags:
            template = BASE_TEMPLATE
    return template.format(
        a=_article(name),
        name=name,
        tag=tags[int(rng.integers(len(tags)))] if "{tag}" in template else "",
        category=emoji.categories[i].lower(),
        sub=sub,
        a_sub=_article(sub),
    )
