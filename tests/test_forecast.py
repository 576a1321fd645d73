"""Conditional generation, measured: matching, baselines, scores, the command."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import small_config

from sqair_pyro.build import build
from sqair_pyro.checkpoint import save_checkpoint
from sqair_pyro.cli import main
from sqair_pyro.data import load_npz
from sqair_pyro.digits import DigitClassifier, save_classifier
from sqair_pyro.forecast import baseline_distances, forecast, match_digits, score_objects
from sqair_pyro.nn.spatial_transformer import boxes_to_z_where

GLIMPSE = 20


@pytest.fixture(scope="module")
def arrays(tiny_data):
    return load_npz(tiny_data / "test.npz")


def test_digits_are_matched_by_the_best_assignment():
    pred = np.array([[0, 0, 10, 10], [20, 20, 10, 10], [40, 40, 5, 5]], dtype=float)
    ids = np.array([7, 8, -1])  # the third is absent: never matched
    true = np.array([[21, 21, 10, 10], [1, 0, 10, 10], [40, 40, 5, 5]], dtype=float)
    visible = np.array([True, True, True])
    assert match_digits(pred, ids, true, visible, 0.5).tolist() == [8, 7, -1]
    assert match_digits(pred, ids, true, np.array([True, False, True]), 0.5).tolist() == [8, -1, -1]
    assert match_digits(pred, ids, true, visible, 0.99).tolist() == [-1, -1, -1]  # IoU < 0.99


def test_baselines_on_constant_velocity_motion():
    """A digit moving 2 px right per frame: constant velocity is exact, staying is 2h off;
    one unseen a frame before the last seen moves with velocity 0."""
    t = np.arange(6, dtype=float)
    boxes = np.zeros((1, 6, 2, 4))
    boxes[0, :, 0] = np.stack([2 * t, 5 + 0 * t, 8 + 0 * t, 8 + 0 * t], -1)
    boxes[0, :, 1] = np.stack([10 + 3 * t, 0 * t, 8 + 0 * t, 8 + 0 * t], -1)
    visible = np.ones((1, 6, 2), bool)
    visible[0, 1, 1] = False
    out = baseline_distances({"boxes": boxes, "visible": visible}, num_observed=3)
    assert out["constant_velocity"][0, 0] == pytest.approx([0, 0, 0])
    assert out["stay"][0, 0] == pytest.approx([2, 4, 6])
    assert out["constant_velocity"][0, 1] == pytest.approx([3, 6, 9])  # no velocity known


def _oracle(arrays, batch, flip_after=None):
    """Latents that put each visible digit's window on its true box and code its class in
    z_what (the stub classifier reads it back); after ``flip_after`` frames classes change."""
    boxes = torch.from_numpy(arrays["boxes"][:batch]).double()
    visible = torch.from_numpy(arrays["visible"][:batch])
    labels = torch.from_numpy(arrays["labels"][:batch])
    size = arrays["images"].shape[2:4]
    transform = boxes_to_z_where(boxes.clamp_min(1e-3), size)
    scale = torch.logit(transform[..., :2].clamp(1e-4, 1 - 1e-4))
    z_where = torch.cat([scale, transform[..., 2:]], -1).float()
    num_frames = visible.shape[1]
    classes = labels.clamp_min(0)[:, None].expand(-1, num_frames, -1).clone()
    if flip_after is not None:
        classes[:, flip_after:] = (classes[:, flip_after:] + 1) % 10
    z_what = torch.nn.functional.one_hot(classes, 10).float()
    ids = torch.where(visible, torch.arange(visible.shape[-1]), -1)
    return {
        "z_pres": visible.float().unsqueeze(-1),
        "z_where": z_where,
        "z_what": z_what,
        "ids": ids,
    }


def _stubs():
    """A decoder that draws a bright square with the class as a brighter pixel, and a
    classifier that reads that pixel."""

    def decoder(z_what):
        glimpse = torch.full((*z_what.shape[:-1], GLIMPSE, GLIMPSE), 0.5)
        glimpse[..., 0, :10] += 0.5 * z_what
        return glimpse

    model = SimpleNamespace(likelihood=SimpleNamespace(decoder=decoder))
    return model, lambda glimpses: glimpses.reshape(-1, GLIMPSE, GLIMPSE)[:, 0, :10]


def test_oracle_latents_keep_every_digit_and_its_place(arrays):
    model, classifier = _stubs()
    batch = 20
    subset = {k: arrays[k][:batch] for k in ("boxes", "visible", "labels")}
    scores = score_objects(_oracle(arrays, batch), model, classifier, subset, 3, 0.5, (50, 50))
    valid = scores["valid"]
    assert valid.sum() > 10
    assert scores["present"][valid].all() and scores["kept"][valid].all()
    assert np.nanmax(scores["distance"][valid]) <= 1.0  # a pixel's rounding at most
    # Changing each digit's class from the 5th frame on (horizon 2) loses it from there.
    flipped = score_objects(
        _oracle(arrays, batch, flip_after=4), model, classifier, subset, 3, 0.5, (50, 50)
    )
    assert flipped["kept"][:, :, 0][valid[:, :, 0]].all()
    assert not flipped["kept"][:, :, 1:][valid[:, :, 1:]].any()


def test_report_of_a_small_model(arrays):
    config = small_config("mlp-sqair", num_frames=10)
    model, guide = build(config)
    report = forecast(
        model,
        guide,
        config,
        arrays,
        DigitClassifier(),
        num_sequences=6,
        batch_size=4,
        progress=False,
    )
    assert report["horizons"] == [1, 2, 3, 4, 5, 6, 7] and report["num_sequences"] == 6
    for key in ("imagined_kept", "reconstructed_kept", "imagined_present", "distance_stay"):
        assert len(report[key]) == 7
    for name in ("imagined", "reconstructed"):
        for value, pairs in zip(report[f"{name}_kept"], report[f"{name}_pairs"], strict=True):
            assert (value is None) == (pairs == 0)  # no pairs: no number, never a false 0
            assert value is None or 0 <= value <= 1
    assert all(
        d <= p for d, p in zip(report["distance_pairs"], report["imagined_pairs"], strict=True)
    )
    json.dumps(report)


def test_bad_input_is_one_clear_error(arrays, tiny_data, tmp_path, capsys):
    config = small_config("mlp-sqair")
    model, guide = build(config)
    clf = DigitClassifier()
    with pytest.raises(ValueError, match="forecast metrics need the ground-truth 'boxes'"):
        forecast(model, guide, config, {"images": arrays["images"]}, clf)
    # Without labels the motion is scored and the class check skipped, with a note.
    unlabelled = {k: v[:4] for k, v in arrays.items() if k not in ("labels", "metadata")}
    report = forecast(model, guide, config, unlabelled, clf, progress=False, source="u.npz")
    assert "u.npz has no labels: skipping class kept" in capsys.readouterr().err
    assert report["imagined_kept"] == [None] * 7 and len(report["distance_stay"]) == 7
    with pytest.raises(ValueError, match="need more than 10 frames; these have 10"):
        forecast(model, guide, config, arrays, clf, num_observed=10)
    with pytest.raises(ValueError, match="latents must be one of sample, mean, got 'best'"):
        forecast(model, guide, config, arrays, clf, latents="best")
    air = small_config("mlp-air")
    with pytest.raises(ValueError, match="needs a model with a temporal prior"):
        forecast(*build(air), air, arrays, clf)
    checkpoint = save_checkpoint(tmp_path / "c.pt", config, model, guide)
    classifier = save_classifier(clf, {"test_accuracy_central": 0.1}, tmp_path / "d.pt")
    args = ["forecast", "--checkpoint", str(checkpoint), "--data", str(tiny_data), "--classifier"]
    out = tmp_path / "f.json"
    assert (
        main([*args, str(classifier), "--out", str(out), "--sequences", "4", "--latents", "mean"])
        == 0
    )
    written = json.loads(out.read_text())
    assert written["num_sequences"] == 4 and written["latents"] == "mean"
    assert out.with_suffix(".png").exists()
    assert "h=7: class kept" in capsys.readouterr().out
    cases = [
        (["--classifier", str(checkpoint)], "not a sqair-pyro digit classifier"),
        (["--classifier", str(tmp_path / "none.pt")], "not found"),
        (["--observed", "12", "--classifier", str(classifier)], "need more than 12 frames"),
    ]
    for extra, message in cases:
        code = main([*args[:-1], "--out", str(out), *extra])
        err = capsys.readouterr().err
        assert code == 1 and message in err and "Traceback" not in err, extra
