"""An MNIST digit classifier that reads decoded glimpses (the forecast metrics' judge).

Conditional generation keeps an object's appearance when the digit its imagined glimpse shows
is the digit the real object is. :class:`DigitClassifier` is trained on the MNIST training
digits, independently of any SQAIR model, on inputs made to look like glimpses
(:func:`glimpse_like`): the digit at a random zoom and offset inside a 20x20 window, blurred
and dimmed at random, as a decoder's output is. Its accuracy on the MNIST test digits is stored
with its weights (``src/sqair_pyro/weights/digit-classifier.pt``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sqair_pyro.checkpoint import CheckpointError, load_torch_file, save_atomic

#: Side of the classifier's square input, in pixels (the glimpse size of every MNIST model).
GLIMPSE = 20
NUM_CLASSES = 10
FORMAT = "sqair-pyro-digit-classifier"
#: Ranges of the random glimpse-like transform: zoom (the window's side over the 28-pixel
#: MNIST frame), offset of the window's centre (fraction of its half-side), blur sigma
#: (pixels) and brightness factor.
ZOOM = (0.5, 1.0)
OFFSET = 0.15
BLUR = (0.0, 1.0)
BRIGHTNESS = (0.6, 1.0)


class DigitClassifier(nn.Module):
    """Two conv layers and two dense layers: (B, 20, 20) in [0, 1] -> (B, 10) logits."""

    def __init__(self, channels: tuple[int, int] = (32, 64), hidden: int = 128) -> None:
        super().__init__()
        c1, c2 = channels
        side = GLIMPSE // 4
        self.net = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.ELU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ELU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * side * side, hidden),
            nn.ELU(),
            nn.Linear(hidden, NUM_CLASSES),
        )

    def forward(self, glimpses: torch.Tensor) -> torch.Tensor:
        return self.net(glimpses.reshape(-1, 1, GLIMPSE, GLIMPSE))


def _blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of (B, 1, H, W) with a per-image sigma (B,), 5x5 kernel."""
    offsets = torch.arange(-2, 3, dtype=images.dtype)
    weights = torch.exp(-0.5 * (offsets / sigma.clamp_min(1e-3).unsqueeze(-1)) ** 2)
    weights = weights / weights.sum(-1, keepdim=True)  # (B, 5)
    batch = images.shape[0]
    x = images.reshape(1, batch, *images.shape[-2:])
    x = F.conv2d(
        F.pad(x, (2, 2, 0, 0), mode="replicate"), weights.reshape(batch, 1, 1, 5), groups=batch
    )
    x = F.conv2d(
        F.pad(x, (0, 0, 2, 2), mode="replicate"), weights.reshape(batch, 1, 5, 1), groups=batch
    )
    return x.reshape(images.shape)


def glimpse_like(
    digits: torch.Tensor, generator: torch.Generator | None = None, random: bool = True
) -> torch.Tensor:
    """20x20 glimpse-like views (B, 20, 20) of MNIST digits (B, 28, 28) in [0, 1].

    ``random=False`` gives the fixed central view (the middle of :data:`ZOOM`, no offset,
    blur or dimming).
    """
    batch = digits.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        if not random:
            return torch.full((batch,), (low + high) / 2)
        return low + (high - low) * torch.rand(batch, generator=generator)

    zoom = uniform(*ZOOM)
    shift = (
        OFFSET * (2 * torch.rand(batch, 2, generator=generator) - 1)
        if random
        else torch.zeros(batch, 2)
    )
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = zoom
    theta[:, :, 2] = shift * zoom.unsqueeze(-1)
    grid = F.affine_grid(theta, [batch, 1, GLIMPSE, GLIMPSE], align_corners=False)
    out = F.grid_sample(digits.unsqueeze(1), grid, align_corners=False)
    if random:
        out = _blur(out, uniform(*BLUR)) * uniform(*BRIGHTNESS).reshape(-1, 1, 1, 1)
    return out.squeeze(1)


@torch.no_grad()
def classify(classifier: nn.Module, glimpses: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Predicted classes (...,) of glimpses (..., 20, 20); glimpses of another size (a finer
    decoder's) are resampled to 20x20 first (bilinear, antialiased)."""
    flat = glimpses.reshape(-1, *glimpses.shape[-2:]).float()
    if tuple(flat.shape[-2:]) != (GLIMPSE, GLIMPSE):
        flat = F.interpolate(
            flat.unsqueeze(1), (GLIMPSE, GLIMPSE), mode="bilinear", antialias=True
        ).squeeze(1)
    out = [classifier(flat[i : i + batch_size]).argmax(-1) for i in range(0, len(flat), batch_size)]
    return (torch.cat(out) if out else torch.zeros(0, dtype=torch.long)).reshape(
        glimpses.shape[:-2]
    )


def train_digit_classifier(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    epochs: int = 4,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> tuple[DigitClassifier, dict[str, float]]:
    """Train on MNIST ``train`` (uint8 images (N, 28, 28), labels (N,)) with a fresh random
    glimpse-like view of every digit in every epoch; report accuracy on ``test``, on the central
    view and on one seeded random view of each digit."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images = torch.from_numpy(np.array(train[0])).float() / 255
    labels = torch.from_numpy(np.array(train[1])).long()
    classifier = DigitClassifier()
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    steps = epochs * (len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    with tqdm(total=steps, disable=not progress, desc="digit classifier") as bar:
        for _ in range(epochs):
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(images) - batch_size + 1, batch_size):
                index = order[start : start + batch_size]
                views = glimpse_like(images[index], generator)
                loss = F.cross_entropy(classifier(views), labels[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update(1)
    classifier.eval()
    test_images = torch.from_numpy(np.array(test[0])).float() / 255
    test_labels = torch.from_numpy(np.array(test[1])).long()
    views = torch.Generator().manual_seed(seed + 1)
    report = {
        "test_accuracy_central": float(
            (classify(classifier, glimpse_like(test_images, random=False)) == test_labels)
            .float()
            .mean()
        ),
        "test_accuracy_random_views": float(
            (classify(classifier, glimpse_like(test_images, views)) == test_labels).float().mean()
        ),
        "epochs": epochs,
        "train_digits": len(images),
        "test_digits": len(test_images),
    }
    return classifier, report


def save_classifier(
    classifier: DigitClassifier, report: dict[str, float], path: str | os.PathLike
) -> Path:
    """Weights and the test report, loadable with ``weights_only=True``."""
    payload = {"format": FORMAT, "weights": classifier.state_dict(), "report": report}
    return save_atomic(payload, path)


def load_classifier(path: str | os.PathLike | None = None) -> tuple[DigitClassifier, dict]:
    """The classifier at ``path`` (default: the shipped one) and its test report."""
    if path is None:
        from sqair_pyro.pretrained import digit_classifier_path

        path = digit_classifier_path()
    payload = load_torch_file(path, "digit classifier")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a sqair-pyro digit classifier")
    classifier = DigitClassifier()
    try:
        classifier.load_state_dict(payload["weights"])
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(f"{path} does not hold this digit classifier's weights") from error
    return classifier.eval(), dict(payload.get("report", {}))
