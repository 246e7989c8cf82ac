"""The captioned shapes world (shared/SHAPES.md): scenes drawn from their captions, and a parser
that reads a scene back out of an image, so a generated image can be checked against its prompt.

    scene = sample_scene(np.random.default_rng(0))      # objects, background, relation, caption
    image = render(scene)                                # (64, 64, 3) uint8, anti-aliased
    caption_holds(image, scene.caption)                  # True

All lengths are given at 64x64 and scale with the canvas. Coordinates are in pixels, x to the right,
y down; pixel (i, j) covers [j, j+1) x [i, i+1), its centre at (j + 0.5, i + 0.5).
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field

import numpy as np

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "cyan": (40, 200, 210),
    "pink": (240, 120, 180),
}
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": (10, 14), "large": (22, 28)}  # bounding-box side at 64x64
RELATIONS = ("to the left of", "to the right of", "above", "below")
MIN_OFFSET = 16  # centres differ by at least this along the relation's axis (at 64x64)
MIN_REGION = 20  # the parser ignores regions smaller than this many pixels (at 64x64)
GAP = 3  # free pixels between two objects' boxes (at 64x64), so their anti-aliased edges never touch
# How much of its bounding box each shape fills; the parser classifies by the nearest.
FILL = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5}


@dataclass
class Obj:
    shape: str
    colour: str
    size: str  # "small" or "large"
    cx: float
    cy: float
    side: float  # bounding-box side in pixels

    def box(self) -> tuple[float, float, float, float]:
        h = self.side / 2
        return self.cx - h, self.cy - h, self.cx + h, self.cy + h


@dataclass
class Scene:
    background: str
    objects: list[Obj]
    relation: str | None = None  # objects[0] <relation> objects[1]
    caption: str = ""
    named: dict = field(default_factory=dict)  # which optional words the caption kept


# --- sampling ------------------------------------------------------------------------------------


def _sample_obj(rng: np.random.Generator, scale: float) -> Obj:
    size = str(rng.choice(list(SIZES)))
    lo, hi = SIZES[size]
    return Obj(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), size, 0.0, 0.0, rng.uniform(lo, hi) * scale)


def _place(rng: np.random.Generator, obj: Obj, canvas: int) -> None:
    margin = max(0.5, canvas / 64)  # keeps the anti-aliased edge off the border
    h = obj.side / 2
    obj.cx, obj.cy = rng.uniform(h + margin, canvas - h - margin, size=2)


def _apart(a: Obj, b: Obj, scale: float, gap: float = GAP) -> bool:
    gap = max(1.5, gap * scale)
    ax0, ay0, ax1, ay1 = a.box()
    bx0, by0, bx1, by1 = b.box()
    return ax1 + gap <= bx0 or bx1 + gap <= ax0 or ay1 + gap <= by0 or by1 + gap <= ay0


def _relation_holds(a: Obj, b: Obj, relation: str, scale: float) -> bool:
    dx, dy = b.cx - a.cx, b.cy - a.cy  # from a to b
    main, other = {"to the left of": (dx, dy), "to the right of": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}[
        relation
    ]
    # 2 px stricter than the spec on the cross axis, so the parser's box centres never flip it.
    return main >= MIN_OFFSET * scale and abs(other) < main - 2 * scale


def sample_scene(rng: np.random.Generator, canvas: int = 64, gap: float = GAP, two_share: float = 0.5) -> Scene:
    """A random scene and its caption; optional caption parts are each kept half of the time.

    `gap` (free pixels between two objects' boxes, at 64x64) and `two_share` (the share of
    two-object scenes) are the spec's at their defaults, and then the draws are the same for any
    seed; a training pool may ask for more room between objects or more pairs (DataConfig says why)."""
    scale = canvas / 64
    background = str(rng.choice(list(BACKGROUNDS)))
    relation = None
    if rng.random() < 1 - two_share:
        objects = [_sample_obj(rng, scale)]
        _place(rng, objects[0], canvas)
    else:
        relation = str(rng.choice(RELATIONS))
        # Rejection sampling, sizes included: two large objects do not fit every canvas and relation.
        for _ in range(10_000):
            objects = [_sample_obj(rng, scale), _sample_obj(rng, scale)]
            for obj in objects:
                _place(rng, obj, canvas)
            if _apart(*objects, scale, gap) and _relation_holds(*objects, relation, scale):
                break
        else:
            raise ValueError(f"could not place two objects {gap} px apart on a {canvas}x{canvas} canvas")
    named = {
        "sizes": [bool(rng.random() < 0.5) for _ in objects],
        "background": bool(rng.random() < 0.5),
    }
    scene = Scene(background, objects, relation, named=named)
    scene.caption = caption_of(scene)
    return scene


def object_phrase(obj: Obj, with_size: bool) -> str:
    """ "a [size ]<colour> <shape>"."""
    return f"a {obj.size + ' ' if with_size else ''}{obj.colour} {obj.shape}"


def caption_of(scene: Scene) -> str:
    parts = [object_phrase(o, s) for o, s in zip(scene.objects, scene.named["sizes"], strict=True)]
    text = parts[0] if len(parts) == 1 else f"{parts[0]} {scene.relation} {parts[1]}"
    return text + (f" on a {scene.background} background" if scene.named["background"] else "")


# --- rendering -----------------------------------------------------------------------------------


def _signed_distance(obj: Obj, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Negative inside, in pixels (exact for circle and square; the max of edge distances for the
    triangle, exact near its edges, which is all anti-aliasing needs)."""
    h = obj.side / 2
    if obj.shape == "circle":
        return np.hypot(x - obj.cx, y - obj.cy) - h
    if obj.shape == "square":
        return np.maximum(np.abs(x - obj.cx), np.abs(y - obj.cy)) - h
    # Upright triangle: apex at the top centre of its box, base along the bottom.
    bottom = y - (obj.cy + h)
    # Side edges: from the apex (cx, cy - h) to (cx +- h, cy + h); outward normals (+-2, -1)/sqrt(5).
    slant = (2 * np.abs(x - obj.cx) - (y - (obj.cy - h))) / math.sqrt(5)
    return np.maximum(bottom, slant)


def coverage(obj: Obj, canvas: int = 64) -> np.ndarray:
    """(canvas, canvas) float32 in [0, 1]: how much of each pixel the object covers (1-pixel anti-aliasing)."""
    y, x = np.mgrid[0:canvas, 0:canvas] + 0.5
    return np.clip(0.5 - _signed_distance(obj, x, y), 0.0, 1.0).astype(np.float32)


def render(scene: Scene, canvas: int = 64) -> np.ndarray:
    """(canvas, canvas, 3) uint8: objects composited over the background, in order."""
    image = np.empty((canvas, canvas, 3), dtype=np.float32)
    image[:] = BACKGROUNDS[scene.background]
    for obj in scene.objects:
        cover = coverage(obj, canvas)[..., None]
        image = image * (1 - cover) + np.array(COLOURS[obj.colour], dtype=np.float32) * cover
    return np.round(image).astype(np.uint8)


def scenes(seed: int, n: int, canvas: int = 64, gap: float = GAP, two_share: float = 0.5) -> list[Scene]:
    """The n scenes of one seed, in order: make_dataset's, with their objects."""
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, canvas, gap, two_share) for _ in range(n)]


def make_dataset(seed: int, n: int, canvas: int = 64, gap: float = GAP,
                 two_share: float = 0.5) -> tuple[np.ndarray, list[str]]:  # fmt: skip
    """n images (n, canvas, canvas, 3) uint8 and their captions, all from one seed."""
    drawn = scenes(seed, n, canvas, gap, two_share)
    return np.stack([render(s, canvas) for s in drawn]), [s.caption for s in drawn]


# --- parsing images ------------------------------------------------------------------------------


@dataclass
class Region:
    colour: str
    shape: str
    size: str
    cx: float
    cy: float
    side: int
    pixels: int


def _nearest(value: np.ndarray, table: dict[str, tuple]) -> str:
    names = list(table)
    dist = [np.sum((value - np.array(table[n], dtype=np.float32)) ** 2) for n in names]
    return names[int(np.argmin(dist))]


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, as arrays of (row, col)."""
    seen = np.zeros_like(mask, dtype=bool)
    out = []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start] = True
        queue, cells = deque([start]), []
        while queue:
            i, j = queue.popleft()
            cells.append((i, j))
            for ni, nj in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                if 0 <= ni < mask.shape[0] and 0 <= nj < mask.shape[1] and mask[ni, nj] and not seen[ni, nj]:
                    seen[ni, nj] = True
                    queue.append((ni, nj))
        out.append(np.array(cells))
    return out


def parse_image(image: np.ndarray) -> tuple[str, list[Region]]:
    """Background name and the objects found, per SHAPES.md's checking rules."""
    background, found = parse_objects(image)
    return background, [region for region, _ in found]


def parse_objects(image: np.ndarray) -> tuple[str, list[tuple[Region, np.ndarray]]]:
    """parse_image, with each object's pixel mask (H, W) bool beside its Region."""
    canvas = image.shape[0]
    scale = canvas / 64
    pixels = image.astype(np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    values, counts = np.unique(border.round(), axis=0, return_counts=True)
    background = _nearest(values[np.argmax(counts)], BACKGROUNDS)
    bg = np.array(BACKGROUNDS[background], dtype=np.float32)
    distance = np.linalg.norm(pixels - bg, axis=-1)
    # An object pixel is at least about half covered: the nearest palette colour to white or black
    # lies ~220 away, so half coverage is ~110; 60 keeps edges without picking up stray noise.
    regions = []
    for cells in _components(distance > 60):
        if len(cells) < MIN_REGION * scale**2:
            continue
        rows, cols = cells[:, 0], cells[:, 1]
        far = distance[rows, cols]
        core = far >= 0.75 * far.max()  # the interior, free of anti-aliased blending with the background
        colour = _nearest(pixels[rows[core], cols[core]].mean(axis=0), COLOURS)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        side = int(max(height, width))
        fill = len(cells) / (height * width)
        shape = min(FILL, key=lambda s: abs(FILL[s] - fill))
        size = "small" if side < (SIZES["small"][1] + SIZES["large"][0]) / 2 * scale else "large"
        cy, cx = (rows.min() + rows.max() + 1) / 2, (cols.min() + cols.max() + 1) / 2
        mask = np.zeros(distance.shape, dtype=bool)
        mask[rows, cols] = True
        regions.append((Region(colour, shape, size, float(cx), float(cy), side, len(cells)), mask))
    return background, regions


# --- checking a caption ---------------------------------------------------------------------------

# "a [size ]<colour> <shape>": groups size (or None), colour, shape. The moving-shapes captions use it too.
OBJECT_PATTERN = r"a (?:(small|large) )?(" + "|".join(COLOURS) + r") (" + "|".join(SHAPES) + r")"
_CAPTION = re.compile(
    rf"^{OBJECT_PATTERN}(?: ({'|'.join(RELATIONS)}) {OBJECT_PATTERN})?(?: on a ({'|'.join(BACKGROUNDS)}) background)?$"
)


def parse_caption(caption: str) -> dict:
    """The named attributes: {"objects": [(size|None, colour, shape), ...], "relation", "background"}."""
    m = _CAPTION.match(caption.strip().lower())
    if not m:
        raise ValueError(f"not a shapes-world caption: {caption!r}")
    g = m.groups()
    objects = [(g[0], g[1], g[2])] + ([(g[4], g[5], g[6])] if g[3] else [])
    return {"objects": objects, "relation": g[3], "background": g[7]}


def region_relation(a: Region, b: Region) -> str:
    dx, dy = b.cx - a.cx, b.cy - a.cy
    if abs(dx) > abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    return "above" if dy > 0 else "below"


def caption_holds(image: np.ndarray, caption: str) -> bool:
    """True when the object count and every attribute the caption names match the image."""
    return caption_mismatch(image, caption) is None


MISMATCHES = ("count", "background", "colour", "shape", "size", "relation")


def caption_mismatch(image: np.ndarray, caption: str) -> str | None:
    """None when the image holds its caption; otherwise the first thing (in MISMATCHES order) it gets wrong.

    With two objects, the regions are matched to the named objects in the order that gets the most
    colours, then shapes, then sizes right, so a wrong relation is only blamed when both objects are
    right: "a red circle above a blue square" drawn as a blue square above a red circle is "relation"."""
    want = parse_caption(caption)
    background, regions = parse_image(image)
    if len(regions) != len(want["objects"]):
        return "count"
    if want["background"] and want["background"] != background:
        return "background"

    def wrong(order: list[Region]) -> tuple[int, int, int]:
        pairs = list(zip(order, want["objects"], strict=True))
        return (sum(r.colour != colour for r, (_, colour, _) in pairs),
                sum(r.shape != shape for r, (_, _, shape) in pairs),
                sum(size is not None and r.size != size for r, (size, _, _) in pairs))  # fmt: skip

    orders = [regions] if len(regions) == 1 else [regions, regions[::-1]]
    best = min(orders, key=wrong)  # ties keep the image's own order, which the relation then judges
    misses = wrong(best)
    for name, missed in zip(("colour", "shape", "size"), misses, strict=True):
        if missed:
            return name
    if want["relation"] is not None and not any(
        wrong(order) == (0, 0, 0) and region_relation(order[0], order[1]) == want["relation"] for order in orders
    ):
        return "relation"
    return None
