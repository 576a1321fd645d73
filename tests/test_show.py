"""``sqair-pyro show``: every figure and animation, their data, determinism, bad input."""

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from PIL import Image

from sqair_pyro.build import build
from sqair_pyro.checkpoint import save_checkpoint
from sqair_pyro.cli import main
from sqair_pyro.config import preset
from sqair_pyro.data import load_npz, save_npz
from sqair_pyro.show import (
    FIGURES,
    TEMPORAL_ONLY,
    figure_data,
    glimpse_data,
    read_metrics,
    select_sequences,
    write_figures,
)
from sqair_pyro.viz import plot_training_curves

torch.set_num_threads(1)

METRICS = """step,time_s,frames,bound,counting_accuracy,objects,grad_norm,lr,val
10,1.0,2,100.0,0.5,1.0,3.0,0.001,
20,2.0,2,110.0,0.6,1.1,3.0,0.001,
20,2.5,,,,,,,90.0
30,3.0,3,120.0,0.7,1.2,3.0,0.001,
30,0.5,3,121.0,0.75,1.2,3.0,0.001,
40,1.5,3,130.0,0.8,1.3,3.0,0.001,
40,2.0,,,,,,,95.0
"""


def tiny(name):
    config = preset(name, hidden=16, z_what_dim=4, discovery_prior="categorical")
    torch.manual_seed(0)
    model, guide = build(config)
    return config, model, guide


@pytest.fixture(scope="module")
def arrays(tiny_data):
    return load_npz(tiny_data / "test.npz")


@pytest.fixture(scope="module")
def sqair_figures(tiny_data, tmp_path_factory):
    """``sqair-pyro show`` on a tiny untrained SQAIR checkpoint whose run has metrics.csv."""
    run = tmp_path_factory.mktemp("run")
    config, model, guide = tiny("mlp-sqair")
    save_checkpoint(run / "last.pt", config, model, guide)
    (run / "metrics.csv").write_text(METRICS)
    out = run / "figures"
    args = ["show", "--checkpoint", str(run / "last.pt"), "--data", str(tiny_data)]
    code = main([*args, "--out", str(out), "--sequences", "2", "--seed", "1"])
    assert code == 0
    return out


def test_every_figure_is_written_and_not_blank(sqair_figures):
    assert sorted(p.name for p in sqair_figures.iterdir()) == sorted(FIGURES)
    for name in FIGURES:
        path = sqair_figures / name
        assert path.stat().st_size > 5000, name
        if name.endswith(".png"):
            image = imread(path)
            assert image.shape[0] > 200 and image.shape[1] > 500, name
            assert image[..., :3].std() > 0.05, name  # drawn, not one colour


def test_gifs_have_one_frame_per_time_step(sqair_figures, arrays):
    num_frames = arrays["images"].shape[1]
    for name in ("reconstructions.gif", "prior_samples.gif", "conditional_generation.gif"):
        with Image.open(sqair_figures / name) as gif:
            assert gif.n_frames == num_frames, name
            first = np.asarray(gif.convert("L"), dtype=float)
            gif.seek(num_frames - 1)
            last = np.asarray(gif.convert("L"), dtype=float)
        assert first.shape[0] > 100 and first.shape[1] > 100
        assert np.abs(first - last).max() > 0, name  # the frames move


def test_figure_data_is_deterministic_for_a_seed_and_consistent(arrays):
    config, model, guide = tiny("mlp-sqair")
    a = figure_data(model, guide, config, arrays, num_sequences=2, seed=3)
    b = figure_data(model, guide, config, arrays, num_sequences=2, seed=3)
    c = figure_data(model, guide, config, arrays, num_sequences=2, seed=4)
    num_frames = arrays["images"].shape[1]
    height, width = config.image_size
    assert a["indices"] == b["indices"] and len(a["indices"]) == 2
    for part in ("reconstruction", "prior", "conditional"):
        for key, value in a[part].items():
            np.testing.assert_array_equal(value, b[part][key], err_msg=f"{part} {key}")
    assert not np.array_equal(a["prior"]["canvas"], c["prior"]["canvas"])
    recon = a["reconstruction"]
    assert recon["canvas"].shape == (2, num_frames, height, width)
    np.testing.assert_allclose(recon["images"], arrays["images"][a["indices"]] / 255.0)
    assert recon["boxes"].shape == (2, num_frames, config.max_objects, 4)
    # Ids of absent objects are -1, present ones not.
    np.testing.assert_array_equal(recon["ids"] >= 0, recon["z_pres"][..., 0] > 0)
    assert a["prior"]["canvas"].shape == (2, num_frames, height, width)
    cond = a["conditional"]
    assert cond["canvas"].shape == (3, 2, num_frames, height, width)
    assert cond["num_observed"] == 3
    np.testing.assert_allclose(cond["real"], recon["images"])
    # Every identity present in a sequence has one glimpse row.
    for s, objects in enumerate(a["glimpses"]):
        ids = recon["ids"][s]
        assert [k for k, _, _ in objects] == sorted(set(ids[ids >= 0].tolist()))[:6]


def test_conditional_generation_sees_the_frames_asked_for(arrays):
    """``num_observed`` (``show --observed``): the imagined futures reconstruct that many
    frames, and with as many frames as the data has there is nothing to imagine."""
    config, model, guide = tiny("mlp-sqair")
    num_frames = arrays["images"].shape[1]
    seen = num_frames - 1
    cond = figure_data(model, guide, config, arrays, 2, 0, num_observed=seen)["conditional"]
    assert cond["num_observed"] == seen
    assert cond["canvas"].shape[2] == num_frames
    assert (
        figure_data(model, guide, config, arrays, 2, 0, num_observed=num_frames)["conditional"]
        is None
    )


def test_glimpses_follow_each_identity_across_slots():
    config, model, _ = tiny("mlp-sqair")
    # One sequence, three frames, two slots: id 5 moves from slot 0 to slot 1, id 7 appears.
    z_what = torch.randn(1, 3, 2, config.z_what_dim)
    ids = np.array([[[5, -1], [7, 5], [-1, -1]]])
    recon = {"z_what": z_what.numpy(), "ids": ids}
    (objects,) = glimpse_data(model, recon)
    decoded = model.likelihood.decoder(z_what).detach().numpy()[0]
    assert [k for k, _, _ in objects] == [5, 7]
    (_, g5, p5), (_, g7, p7) = objects
    assert p5.tolist() == [True, True, False] and p7.tolist() == [False, True, False]
    np.testing.assert_allclose(g5[0], decoded[0, 0], atol=1e-6)
    np.testing.assert_allclose(g5[1], decoded[1, 1], atol=1e-6)
    np.testing.assert_allclose(g7[1], decoded[1, 0], atol=1e-6)
    assert g5[2].max() == 0 and g7[0].max() == 0 and g7[2].max() == 0


def test_glimpses_keep_the_longest_lived_objects():
    config, model, _ = tiny("mlp-sqair")
    ids = np.array([[[0, 1], [0, 2], [0, 3], [4, -1]]])
    recon = {"z_what": np.zeros((1, 4, 2, config.z_what_dim), np.float32), "ids": ids}
    (objects,) = glimpse_data(model, recon, max_objects=2)
    assert [k for k, _, _ in objects] == [0, 1]


def test_metrics_resume_restarts_the_clock_and_keeps_the_last_row(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(METRICS)
    train, validation = read_metrics(path)
    assert train["step"].tolist() == [10, 20, 30, 40]
    assert train["bound"].tolist() == [100, 110, 121, 130]  # step 30 logged twice: the last
    # The resumed run's clock restarted at 0.5 after 3.0 s.
    np.testing.assert_allclose(train["wall_s"], [1.0, 2.0, 3.5, 4.5])
    assert validation["step"].tolist() == [20, 40]
    assert validation["val"].tolist() == [90, 95]
    np.testing.assert_allclose(validation["wall_s"], [2.5, 5.0])
    with pytest.raises(FileNotFoundError):
        read_metrics(tmp_path / "absent.csv")
    # A run that has not logged yet: no rows, and the curves still draw (empty panels).
    path.write_text(METRICS.splitlines()[0] + "\n")
    assert read_metrics(path) == ({}, {})
    assert plot_training_curves(tmp_path / "empty.png", {}, {}).stat().st_size > 1000
    path.write_text("not,a,metrics,file\n1,2,3,4\n")
    with pytest.raises(ValueError, match="step"):
        read_metrics(path)


def test_sequences_are_chosen_among_non_empty_ones(arrays):
    indices = select_sequences(arrays, 5, seed=0)
    assert indices == sorted(set(indices)) and len(indices) == 5
    assert all(arrays["counts"][i].sum() > 0 for i in indices)
    assert select_sequences(arrays, 5, seed=0) == indices
    assert select_sequences(arrays, 5, seed=1) != indices


def test_air_skips_the_sqair_only_figures(arrays, tmp_path, capsys):
    config, model, guide = tiny("mlp-air")
    paths = write_figures(model, guide, config, arrays, tmp_path, num_sequences=2, seed=0)
    names = {p.name for p in paths}
    assert names == set(FIGURES) - set(TEMPORAL_ONLY) - {"training_curves.png"}
    assert all(p.exists() and p.stat().st_size > 5000 for p in paths)
    out = capsys.readouterr().out
    assert "skipped glimpses.png" in out and "skipped conditional_generation" in out

    data = figure_data(model, guide, config, arrays, num_sequences=2, seed=0)
    assert data["glimpses"] is None and data["conditional"] is None
    num_frames = arrays["images"].shape[1]
    recon, prior = data["reconstruction"], data["prior"]
    assert recon["canvas"].shape == (2, num_frames, *config.image_size)
    # AIR: frames inferred alone, every present object a new identity (t * N + slot).
    n = config.max_objects
    fresh = np.arange(num_frames * n).reshape(num_frames, n)
    np.testing.assert_array_equal(recon["ids"], np.where(recon["z_pres"][..., 0] > 0, fresh, -1))
    # Independent prior images, arranged like sequences; the untrained prior draws objects.
    assert prior["canvas"].shape == (2, num_frames, *config.image_size)
    assert (prior["ids"] >= 0).any() and prior["canvas"].max() > 0


def test_bad_frame_size_and_missing_checkpoint_are_one_clear_error(tmp_path, capsys, arrays):
    config, model, guide = tiny("mlp-sqair")
    small = dict(arrays, images=arrays["images"][:, :, :40, :40])
    with pytest.raises(ValueError, match="40x40"):
        write_figures(model, guide, config, small, tmp_path / "f")
    other = config.replace(image_size=(40, 40))
    checkpoint = save_checkpoint(tmp_path / "c.pt", other, *build(other))
    data = save_npz(tmp_path / "d.npz", arrays)
    code = main(
        ["show", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 1 and "50x50" in err and "Traceback" not in err
    code = main(
        ["show", "--checkpoint", str(tmp_path / "no.pt"), "--data", str(data), "--out", "x"]
    )
    err = capsys.readouterr().err
    assert code == 1 and "not found" in err
    assert not list(tmp_path.glob("*.png"))


def test_air_prior_samples_show_the_draws_with_objects_first():
    from conftest import small_config

    from sqair_pyro.show import AIR_PRIOR_DRAWS, prior_data

    config = small_config("mlp-air", geometric_rho=0.3)
    model, _ = build(config)
    data = prior_data(model, config, num_samples=2, num_frames=3, seed=1)
    shown = (data["ids"] >= 0).any(-1).reshape(-1)  # frames in display order
    draws = AIR_PRIOR_DRAWS * 6
    assert data["canvas"].shape[:2] == (2, 3)
    assert shown.sum() == min(6, round(data["with_objects"] * draws))
    assert not (~shown[:-1] & shown[1:]).any()  # no empty frame before one with objects
