"""Evaluation: counting, the log p(x) estimate, single-sample terms, reports, bad input, CLI."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from sqair_pyro.build import build
from sqair_pyro.checkpoint import CheckpointError, save_checkpoint
from sqair_pyro.cli import main
from sqair_pyro.config import preset
from sqair_pyro.data import load_npz
from sqair_pyro.evaluate import (
    ADDITION_FORMAT,
    PAPER_TABLE1,
    REPORT_FORMAT,
    counting_hits,
    evaluate,
    evaluate_checkpoint,
    join_addition,
    load_report,
    log_px,
    markdown_table,
    num_digits,
    predicted_boxes,
    save_report,
    single_sample_terms,
    site_family,
)
from sqair_pyro.models.air import frame_ids
from sqair_pyro.predict import boxes_and_ids
from sqair_pyro.tracking import tracking_metrics

REQUIRED = {
    "log_px",
    "log_px_given_z",
    "kl",
    "counting_accuracy",
    "counting_accuracy_visible",
    "hota",
    "mota",
    "motp",
    "idf1",
    "id_switches",
    "false_positives",
    "misses",
    "num_gt_dets",
    "num_sequences",
    "num_particles",
    "num_frames",
    "checkpoint",
    "config",
    "wall_time_s",
    "seed",
}


def tiny(name):
    config = preset(name, hidden=16, z_what_dim=4)
    model, guide = build(config)
    return config, model, guide


@pytest.fixture(scope="module")
def test_arrays(tiny_data):
    return load_npz(tiny_data / "test.npz")


# --------------------------------------------------------------------------- counting


def test_counting_against_sequence_and_visible_counts():
    # Two sequences, three frames, three slots; inferred counts [[2, 1, 2], [0, 0, 1]].
    z_pres = torch.zeros(2, 3, 3, 1)
    z_pres[0, 0, :2] = 1
    z_pres[0, 1, 0] = 1
    z_pres[0, 2, :2] = 1
    z_pres[1, 2, 0] = 1
    labels = np.array([[4, 9, -1], [-1, -1, -1]])
    assert num_digits(labels).tolist() == [2, 0]
    # Against the digits of the sequence: the second frame of sequence 0 misses one that
    # slid out of view, the last frame of sequence 1 sees a ghost.
    hits = counting_hits(z_pres, num_digits(labels))
    assert hits.tolist() == [[True, False, True], [True, True, False]]
    # Against what is visible per frame (the digit is out of view in frame 1).
    visible_counts = np.array([[2, 1, 2], [0, 0, 0]])
    hits = counting_hits(z_pres, visible_counts)
    assert hits.tolist() == [[True, True, True], [True, True, False]]
    assert hits.float().mean().item() == pytest.approx(5 / 6)


# ----------------------------------------------------------------- log p(x), terms

S = 0.5


def gaussian_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, S), obs=x)


def gaussian_guide(x, shift=0.0, widen=1.0):
    var = S**2 / (1 + S**2)  # the exact posterior is N(x / (1 + S^2), var)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x / (1 + S**2) + shift, widen * math.sqrt(var)))


def exact_log_px(x):
    return dist.Normal(0.0, math.sqrt(1 + S**2)).log_prob(x)


def test_log_px_is_exact_with_the_exact_posterior():
    x = torch.linspace(-2, 2, 7)
    estimate = log_px(gaussian_model, gaussian_guide, x, num_particles=250, chunk_size=100)
    torch.testing.assert_close(estimate, exact_log_px(x), atol=1e-5, rtol=0)


def test_log_px_bound_tightens_to_the_truth():
    pyro.set_rng_seed(0)
    x = torch.tensor([-1.0, 0.5, 1.5]).repeat(200)

    def guide(x):
        gaussian_guide(x, shift=0.7, widen=1.4)

    gaps = [
        (exact_log_px(x) - log_px(gaussian_model, guide, x, k, chunk_size=64)).mean().item()
        for k in (1, 1000)
    ]
    assert gaps[0] > 0.5  # one particle: a loose lower bound
    assert abs(gaps[1]) < 0.02  # K = 1000: within a few hundredths of log p(x)


def test_site_families_drop_frame_and_slot_indices():
    assert site_family("z_what_prop_3_1") == "z_what_prop"
    assert site_family("z_7") == "z" and site_family("z_pres") == "z_pres"
    assert site_family("x_0") == "x" and site_family("layer2_w") == "layer2_w"


def test_single_sample_terms_form_the_elbo():
    x = torch.tensor([-1.0, 0.3, 2.0])
    pyro.set_rng_seed(1)
    terms = single_sample_terms(gaussian_model, gaussian_guide, x)
    # With the exact posterior every sample's log p(x|z) - [log q(z|x) - log p(z)] = log p(x).
    torch.testing.assert_close(
        terms["log_px_given_z"] - terms["kl"], exact_log_px(x), atol=1e-5, rtol=0
    )
    assert not torch.allclose(terms["kl"], torch.zeros(3))


# ------------------------------------------------------------------------- evaluate


def test_evaluation_is_deterministic_for_a_seed(test_arrays):
    config, model, guide = tiny("mlp-sqair")
    kw = dict(num_particles=4, num_sequences=4, batch_size=3, chunk_size=3, progress=False)
    first = evaluate(model, guide, config, test_arrays, seed=5, **kw)
    second = evaluate(model, guide, config, test_arrays, seed=5, **kw)
    for report in (first, second):
        assert report.pop("wall_time_s") > 0
    assert first == second
    other = evaluate(model, guide, config, test_arrays, seed=6, **kw)
    assert other["log_px"] != first["log_px"]


@pytest.mark.parametrize("name", ["mlp-sqair", "mlp-air"])
def test_both_models_report_every_key_per_sequence(name, test_arrays, tmp_path):
    config, model, guide = tiny(name)
    report = evaluate(
        model, guide, config, test_arrays, num_particles=3, num_sequences=5, progress=False
    )
    assert REQUIRED <= set(report)
    assert report["num_sequences"] == 5 and report["num_particles"] == 3
    # The KL's share of each site family sums to the KL (same sample, float rounding).
    families = {
        "mlp-sqair": {
            "z_pres_disc",
            "z_where_disc",
            "z_what_disc",
            "z_pres_prop",
            "z_where_prop",
            "z_what_prop",
        },
        "mlp-air": {"z_pres", "z_where", "z_what"},
    }[name]
    assert set(report["kl_by_site"]) == families
    assert sum(report["kl_by_site"].values()) == pytest.approx(report["kl"], rel=1e-5, abs=1e-3)
    assert report["num_frames"] == test_arrays["images"].shape[1] == 10
    assert report["num_gt_dets"] == int(test_arrays["visible"][:5].sum())
    assert report["config"]["model"]["name"] == name[4:]
    for key in ("log_px", "log_px_given_z", "kl", "counting_accuracy", "hota", "mota"):
        assert math.isfinite(report[key]), key
    assert 0 <= report["counting_accuracy"] <= 1 and 0 <= report["idf1"] <= 1
    # The report is JSON and comes back unchanged.
    path = save_report(report, tmp_path / "r.json")
    assert load_report(path) == json.loads(json.dumps(report))


def test_air_sums_its_frames_into_sequences(test_arrays):
    """AIR sees 4 x 10 independent frames; its numbers are per sequence of 10 (summed)."""
    config, model, guide = tiny("mlp-air")
    report = evaluate(
        model, guide, config, test_arrays, num_particles=3, num_sequences=4, progress=False
    )
    # Replay the same draws: one batch, the single sample first, then the K particles.
    pyro.set_rng_seed(0)
    frames = torch.from_numpy(test_arrays["images"][:4]).float().reshape(40, 50, 50) / 255
    terms = single_sample_terms(model, guide, frames)
    estimate = log_px(model, guide, frames, num_particles=3, chunk_size=100)
    per_sequence = estimate.reshape(4, 10).sum(-1)
    assert report["log_px"] == pytest.approx(per_sequence.mean().item(), rel=1e-6)
    recon = terms["log_px_given_z"].reshape(4, 10).sum(-1).mean().item()
    assert report["log_px_given_z"] == pytest.approx(recon, rel=1e-6)
    count = terms["latents"]["z_pres"].reshape(4, 10, -1).sum(-1)
    target = torch.from_numpy(test_arrays["counts"][:4])
    assert report["counting_accuracy_visible"] == pytest.approx((count == target).float().mean())
    digits = torch.from_numpy((test_arrays["labels"][:4] >= 0).sum(-1, keepdims=True))
    assert report["counting_accuracy"] == pytest.approx((count == digits).float().mean())


def test_air_identities_are_new_in_every_frame():
    z_pres = torch.tensor([[[1, 1, 0], [1, 0, 0], [1, 1, 1]]]).unsqueeze(-1)  # (S, T, N, 1)
    fresh = frame_ids(z_pres)
    assert fresh.tolist() == [[[0, 1, -1], [3, -1, -1], [6, 7, 8]]]
    # Perfect boxes of one digit over 4 frames: 3 switches, no identity kept.
    gt = torch.tensor([10.0, 10.0, 10.0, 10.0]).expand(1, 4, 1, 4)
    visible = torch.ones(1, 4, 1, dtype=torch.bool)
    result = tracking_metrics(gt, frame_ids(torch.ones(1, 4, 1, 1)), gt, visible, (50, 50))
    assert result["id_switches"] == 3 and result["misses"] == 0
    assert result["idf1"] == pytest.approx(1 / 4)


def test_boxes_and_ids_stay_on_the_latents_device():
    # Without ``ids`` (AIR) the slot index is the identity; it must live where the latents do
    # (a GPU in use). The meta device stands in for one here: mixing it with CPU tensors fails
    # as CUDA does.
    latents = {
        "z_pres": torch.ones(2, 3, 1, device="meta"),
        "z_where": torch.zeros(2, 3, 4, device="meta"),
    }
    boxes, ids = boxes_and_ids(latents, (50, 50))
    assert boxes.device.type == ids.device.type == "meta"
    assert boxes.shape == (2, 3, 4) and ids.shape == (2, 3)


def fake_model(draw):
    """Just the part of a model that content boxes use: likelihood.decoder."""
    return SimpleNamespace(likelihood=SimpleNamespace(decoder=draw))


def test_content_boxes_are_tight_around_the_drawn_object():
    # A decoder that draws a 4 x 6 block at rows 8..11, columns 7..12 of a 20 x 20 glimpse.
    model = fake_model(
        lambda z_what: torch.nn.functional.pad(torch.ones(*z_what.shape[:-1], 4, 6), (7, 7, 8, 8))
    )
    # A 20 x 20 pixel glimpse window whose top-left corner is at (10, 5): one pixel per pixel.
    z_where = torch.tensor([[[math.log(2 / 3), math.log(2 / 3), -0.2, -0.4]]])
    latents = {"z_pres": torch.ones(1, 1, 1), "z_where": z_where, "z_what": torch.zeros(1, 1, 4)}
    window, _ = predicted_boxes(model, latents, (50, 50), mode="window")
    torch.testing.assert_close(window[0, 0], torch.tensor([10.0, 5.0, 20.0, 20.0]))
    content, ids = predicted_boxes(model, latents, (50, 50), mode="content")
    torch.testing.assert_close(content[0, 0], torch.tensor([17.0, 13.0, 6.0, 4.0]))
    assert ids.tolist() == [[0]]
    # An object that draws nothing above the threshold is no detection.
    faint = fake_model(lambda z_what: torch.full((*z_what.shape[:-1], 20, 20), 0.05))
    _, ids = predicted_boxes(faint, latents, (50, 50), mode="content", threshold=0.1)
    assert ids.tolist() == [[-1]]
    with pytest.raises(ValueError, match="box mode"):
        predicted_boxes(model, latents, (50, 50), mode="centre")


# ------------------------------------------------------------------- errors, tables


def test_bad_input_is_one_clear_error(test_arrays, tiny_data, tmp_path):
    config, model, guide = tiny("mlp-sqair")
    small = dict(test_arrays, images=test_arrays["images"][:, :, :40, :40])
    with pytest.raises(ValueError, match="40x40"):
        evaluate(model, guide, config, small, num_particles=2, progress=False)
    with pytest.raises(ValueError, match="images"):
        evaluate(model, guide, config, {"labels": test_arrays["labels"]}, progress=False)
    checkpoint = save_checkpoint(tmp_path / "c.pt", config, model, guide)
    not_data = tmp_path / "notes.npz"
    not_data.write_text("not an npz")
    with pytest.raises(ValueError, match="is not a data file"):
        evaluate_checkpoint(checkpoint, not_data, num_particles=2, progress=False)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a sqair-pyro checkpoint"):
        evaluate_checkpoint(other, tiny_data / "test.npz", progress=False)
    with pytest.raises(CheckpointError):
        evaluate_checkpoint(tiny_data / "test.npz", tiny_data / "test.npz", progress=False)


def test_markdown_table_has_our_rows_and_the_papers():
    report = {"model_name": "MLP-SQAIR", "checkpoint": "runs/x/best.pt", "log_px": 6000.04}
    report.update(log_px_given_z=6100.0, kl=100.0, counting_accuracy=0.5, num_particles=5)
    lines = markdown_table([report]).splitlines()
    assert len(lines) == 2 + 1 + len(PAPER_TABLE1)
    assert lines[2].startswith("| MLP-SQAIR (runs/x/best.pt) | 6000.0 | 6100.0 | 100.0 | 0.5000")
    assert "| MLP-SQAIR (paper) | 6617.6 | 6786.5 | 164.5 | 0.9986 | 0.9998 |" in lines[4]
    assert "| MLP-AIR (paper) | 6443.6 | 6830.6 | 352.6 | 0.9058 | 0.8644 |" in lines[5]
    with pytest.raises(ValueError, match="not an evaluation report"):
        markdown_table([{"hota": 1.0}])


def test_addition_reports_join_the_rows_of_their_checkpoint():
    base = dict(format=REPORT_FORMAT, model_name="MLP-SQAIR", log_px=1.0, kl=2.0)
    window = dict(base, checkpoint="a.pt", checkpoint_step=100, box_mode="window")
    content = dict(window, box_mode="content")
    other_step = dict(base, checkpoint="a.pt", checkpoint_step=200)
    addition = dict(format=ADDITION_FORMAT, model_name="MLP-SQAIR", checkpoint_step=100)
    addition["accuracy"] = 0.25
    air_only = dict(format=ADDITION_FORMAT, model_name="MLP-AIR", checkpoint="b.pt", accuracy=0.6)
    rows = join_addition([window, addition, content, other_step, air_only])
    assert [row.get("addition") for row in rows] == [0.25, 0.25, None, 0.6]
    assert rows[3]["model_name"] == "MLP-AIR" and "log_px" not in rows[3]
    assert "addition" not in window  # the reports themselves are left as they were
    lines = markdown_table([window, content, addition], paper=False).splitlines()
    assert lines[2].startswith(
        "| MLP-SQAIR (a.pt), window boxes | 1.0 | n/a | 2.0 | n/a | 0.2500 |"
    )
    assert lines[3].startswith("| MLP-SQAIR (a.pt) | 1.0 |")  # content boxes: the default


def test_command_line_evaluate_and_compare(tiny_data, tmp_path, capsys):
    config, model, guide = tiny("mlp-sqair")
    checkpoint = save_checkpoint(tmp_path / "c.pt", config, model, guide, step=7)
    out = tmp_path / "report.json"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(tiny_data), "--out"]
    code = main([*args, str(out), "--particles", "2", "--sequences", "3", "--seed", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| MLP-SQAIR (" in printed and "(paper)" in printed
    report = json.loads(out.read_text())
    assert report["num_sequences"] == 3 and report["seed"] == 1
    assert report["checkpoint_step"] == 7 and report["data"].endswith("test.npz")
    assert report["overrides"] == {}
    # --set rebuilds the programs around the same weights: recorded, and they score otherwise.
    changed = tmp_path / "changed.json"
    aligned = ["--set", "discovery_aligns_window=3", "--set", "centre_glimpses=True"]
    code = main(
        [*args, str(changed), "--particles", "2", "--sequences", "3", "--seed", "1", *aligned]
    )
    assert code == 0
    capsys.readouterr()
    other = json.loads(changed.read_text())
    assert other["overrides"] == {"discovery_aligns_window": 3, "centre_glimpses": True}
    assert other["config"]["guide"]["discovery_aligns_window"] == 3
    assert other["config"]["model"]["centre_glimpses"] is True
    assert other["log_px_given_z"] != pytest.approx(report["log_px_given_z"], abs=1e-3)
    assert main(["compare", str(changed)]) == 0
    assert "--set centre_glimpses=True, discovery_aligns_window=3 |" in capsys.readouterr().out
    assert main(["compare", str(out), str(out)]) == 0
    assert capsys.readouterr().out.count(f"| MLP-SQAIR ({checkpoint}) |") == 2
    assert main(["compare", str(tiny_data / "test.npz")]) == 1
    err = capsys.readouterr().err
    assert "not a JSON evaluation report" in err and "Traceback" not in err
    assert main([*args, str(out), "--data", str(tmp_path)]) == 1
    assert "test.npz" in capsys.readouterr().err


def test_more_objects_than_slots_is_said_once(test_arrays, capsys):
    config, model, guide = tiny("mlp-sqair")
    config = config.replace(max_objects=1)
    model, guide = build(config)
    evaluate(model, guide, config, test_arrays, num_particles=2, num_sequences=2, progress=False)
    err = capsys.readouterr().err
    assert (
        err.count("warning: the data have up to 2 objects in a frame but the model has 1 slots")
        == 1
    )
