"""The autoencoder lessons (latentdiff.lab) on tiny synthetic images: none of this needs MNIST."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from latentdiff.cli import main
from latentdiff.lab import data as lab_data
from latentdiff.lab.data import LabData
from latentdiff.lab.denoising import NOISES, at_random_levels, masking_noise
from latentdiff.lab.metrics import knn_accuracy, mse, psnr
from latentdiff.lab.models import ConvAutoencoder, DenseAutoencoder, reconstruct_all, train_autoencoder
from latentdiff.lab.pca import fit_pca


def bars(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, 784) images of four classes: a horizontal, a vertical, a diagonal bar or a square, placed at random."""
    g = torch.Generator().manual_seed(seed)
    images, labels = torch.zeros(count, 28, 28), torch.arange(count) % 4
    for image, label in zip(images, labels.tolist(), strict=True):
        r, c = torch.randint(4, 20, (2,), generator=g).tolist()
        if label == 0:
            image[r : r + 3, 4:24] = 1
        elif label == 1:
            image[4:24, c : c + 3] = 1
        elif label == 2:
            image[range(4, 24), range(4, 24)] = 1
        else:
            image[r : r + 8, c : c + 8] = 1
    return images.flatten(1), labels


def tiny_data() -> LabData:
    (train, train_labels), (test, test_labels) = bars(48, seed=0), bars(20, seed=1)
    return LabData("tiny", train, train_labels, test, test_labels, ("row", "column", "diagonal", "square"), "ours")


def test_pca_codes_equal_a_reference_svd_projection():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 12)) * np.linspace(3, 0.5, 12) + rng.normal(size=12)  # distinct variances
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    reference = centred @ vt[:3].T  # (60, 3)
    codes = fit_pca(torch.tensor(x, dtype=torch.float32), 3).encode(torch.tensor(x, dtype=torch.float32)).numpy()
    signs = np.sign((codes * reference).sum(axis=0))  # each component is defined up to its sign
    np.testing.assert_allclose(codes * signs, reference, atol=1e-4)


@pytest.mark.parametrize("make", [lambda: DenseAutoencoder(2, widths=(64, 32)), lambda: ConvAutoencoder(2, (8, 16))],
                         ids=["dense", "conv"])  # fmt: skip
def test_autoencoder_loss_falls(make):
    torch.manual_seed(0)
    images, _ = bars(64, seed=0)
    model = make()
    losses = train_autoencoder(model, images, epochs=60, batch_size=8)
    assert losses[-1] < 0.3 * losses[0]
    # Better than the best constant guess, the mean image: the two code numbers carry something.
    assert mse(reconstruct_all(model, images), images) < 0.85 * mse(images.mean(dim=0).expand_as(images), images)


@pytest.mark.parametrize("noise", ["gaussian", "masking"])
def test_denoising_autoencoder_output_beats_its_noisy_input(noise):
    torch.manual_seed(0)
    images, _ = bars(64, seed=0)
    model = ConvAutoencoder(16, (8, 16))
    noisy = NOISES[noise](images, 0.25, torch.Generator().manual_seed(1))
    assert psnr(reconstruct_all(model, noisy), images) < psnr(noisy, images)  # untrained, it only does harm
    train_autoencoder(model, images, epochs=60, batch_size=8, corrupt=at_random_levels(NOISES[noise], 0.5))
    assert psnr(reconstruct_all(model, noisy), images) > psnr(noisy, images) + 3  # dB


def test_masking_noise_zeroes_the_given_share_of_pixels():
    ones = torch.ones(10, 1000)
    masked = masking_noise(ones, 0.3, torch.Generator().manual_seed(0))
    assert set(masked.unique().tolist()) == {0.0, 1.0}
    assert abs((masked == 0).float().mean().item() - 0.3) < 0.02


def test_knn_accuracy_votes_among_the_k_nearest_training_codes():
    train = torch.tensor([[0.0, 0], [0.1, 0], [0.2, 0], [5, 5], [5.1, 5], [5.2, 5]])
    train_labels = torch.tensor([0, 0, 1, 1, 1, 0])
    test = torch.tensor([[0.05, 0], [5.05, 5], [0.25, 0]])
    # k=1: each point takes its nearest neighbour's class: 0, 1, 1 (the last is labelled 0: wrong).
    assert knn_accuracy(train, train_labels, test, torch.tensor([0, 1, 0]), k=1) == pytest.approx(2 / 3)
    # k=3: the majority of each cluster: 0, 1, 0, all right.
    assert knn_accuracy(train, train_labels, test, torch.tensor([0, 1, 0]), k=3) == 1.0


@pytest.mark.parametrize("lesson", ["ae-vs-pca", "conv-vs-dense", "denoising-ae"])
def test_each_lesson_writes_its_figure_and_numbers(lesson, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(lab_data, "load_lab_data", lambda *args: tiny_data())
    assert main(["lab", lesson, "--out", str(tmp_path), "--epochs", "1"]) == 0
    metrics = json.loads((tmp_path / f"{lesson}-tiny.json").read_text())
    assert metrics["lesson"] == lesson and metrics["train_images"] == 48 and metrics["epochs"] == 1
    assert Image.open(tmp_path / f"{lesson}-tiny.png").size[0] > 300
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{lesson}-tiny.json", f"{lesson}-tiny.png"]  # no temps
    assert f"{lesson}-tiny.json in" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "cifar"], "invalid choice: 'cifar'"),
        (["--epochs", "0"], "--epochs: must be at least 1, got 0"),
        ([], "run: latentdiff data prepare mnist"),  # LATENTDIFF_DATA points at an empty folder
    ],
)
def test_bad_input_gets_one_line(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LATENTDIFF_DATA", str(tmp_path / "empty"))
    assert main(["lab", "ae-vs-pca", "--out", str(tmp_path / "out"), *args]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_an_out_path_that_is_a_file_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    assert main(["lab", "denoising-ae", "--out", str(tmp_path / "taken")]) == 2
    assert capsys.readouterr().err == f"latentdiff: error: --out {tmp_path / 'taken'}: exists and is not a folder\n"
