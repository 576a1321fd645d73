"""The digit classifier that judges imagined glimpses."""

import pickle

import numpy as np
import pytest
import torch

from sqair_pyro.checkpoint import CheckpointError
from sqair_pyro.data.mnist import load_mnist
from sqair_pyro.digits import (
    GLIMPSE,
    classify,
    glimpse_like,
    load_classifier,
    save_classifier,
    train_digit_classifier,
)
from sqair_pyro.pretrained import available, digit_classifier_path


@pytest.fixture(scope="module")
def mnist_test():
    images, labels = load_mnist("test")
    return np.array(images), np.array(labels)


def test_glimpse_like_views(mnist_test):
    digits = torch.from_numpy(mnist_test[0][:64]).float() / 255
    views = glimpse_like(digits, torch.Generator().manual_seed(0))
    assert views.shape == (64, GLIMPSE, GLIMPSE)
    assert views.min() >= 0 and views.max() <= 1
    again = glimpse_like(digits, torch.Generator().manual_seed(0))
    assert torch.equal(views, again)  # seeded
    central = glimpse_like(digits, random=False)
    # The central view keeps the digit's ink in the middle: mass centred within 2 pixels.
    grid = torch.arange(GLIMPSE).float()
    mass = central.sum((-2, -1))
    cy = (central.sum(-1) * grid).sum(-1) / mass
    cx = (central.sum(-2) * grid).sum(-1) / mass
    assert (cy - 9.5).abs().mean() < 2 and (cx - 9.5).abs().mean() < 2


def test_a_short_training_learns_digits(mnist_test):
    """6,000 training digits, two epochs: far above chance (0.1) on 1,000 test digits."""
    train_images, train_labels = load_mnist("train")
    test = (mnist_test[0][:1000], mnist_test[1][:1000])
    _, report = train_digit_classifier(
        (train_images[:6000], train_labels[:6000]), test, epochs=2, progress=False
    )
    assert report["test_accuracy_central"] > 0.85


def test_the_shipped_classifier_reads_mnist_test_digits(mnist_test):
    """Its stored accuracy is >= 0.99, and so is a re-measure on 2,000 test digits
    (tolerance 0.01 for the subset)."""
    assert "digit-classifier" not in available()  # not a model
    classifier, report = load_classifier(digit_classifier_path())
    assert report["test_accuracy_central"] >= 0.99
    digits = torch.from_numpy(mnist_test[0][:2000]).float() / 255
    predicted = classify(classifier, glimpse_like(digits, random=False))
    accuracy = (predicted.numpy() == mnist_test[1][:2000]).mean()
    assert accuracy >= 0.98
    # a finer decoder's 28x28 glimpses are resampled to 20x20 first: the same digits at 28x28
    # read as they do at 20x20 (agreement 0.98 or more on the 2,000)
    finer = torch.nn.functional.interpolate(
        glimpse_like(digits, random=False).unsqueeze(1), (28, 28), mode="bilinear"
    ).squeeze(1)
    assert (classify(classifier, finer) == predicted).float().mean() >= 0.98


class _Payload:
    def __reduce__(self):
        return (print, ("payload ran",))


def test_files_round_trip_and_bad_files_are_refused(tmp_path, capsys):
    classifier, _ = load_classifier()
    path = save_classifier(classifier, {"test_accuracy_central": 0.5}, tmp_path / "c.pt")
    again, report = load_classifier(path)
    assert report == {"test_accuracy_central": 0.5}
    for key, value in classifier.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])
    crafted = tmp_path / "crafted.pt"
    crafted.write_bytes(pickle.dumps({"format": _Payload()}))  # a bare pickle
    with pytest.raises(CheckpointError, match="found a Python pickle"):
        load_classifier(crafted)
    torch.save({"format": _Payload()}, crafted)  # torch's format around it
    with pytest.raises(CheckpointError, match="could run code; refused"):
        load_classifier(crafted)
    assert "payload ran" not in capsys.readouterr().out
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a sqair-pyro digit classifier"):
        load_classifier(other)
    with pytest.raises(CheckpointError, match="not found"):
        load_classifier(tmp_path / "missing.pt")
