"""The benchmark scripts' own arithmetic, on cases whose answer is known by hand."""

import numpy as np
import pytest


def benchmark(monkeypatch, name: str):
    """The benchmark script ``benchmarks/<name>.py`` as a module."""
    import importlib
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    return importlib.import_module(name)


def report_on_shipped(monkeypatch, script: str, model: str, data, out, frames: int) -> dict:
    """The JSON report of benchmark ``script`` on the shipped ``model``, the first 20
    sequences of ``data``/test.npz and their first ``frames`` frames, written to ``out``."""
    import json

    from sqair_pyro.pretrained import pretrained_path

    benchmark(monkeypatch, script).main([
        "--checkpoint", str(pretrained_path(model)), "--data", str(data / "test.npz"),
        "--sequences", "20", "--frames", str(frames), "--json", str(out),
    ])  # fmt: skip
    return json.loads(out.read_text())


@pytest.fixture
def miscounts(monkeypatch):
    return benchmark(monkeypatch, "miscounts")


def test_largest_overlap_of_a_frames_boxes(miscounts):
    boxes = np.array(
        [
            [[[0, 0, 10, 10], [5, 0, 10, 10]]],  # IoU 50 / 150
            [[[0, 0, 10, 10], [20, 20, 5, 5]]],  # apart
            [[[0, 0, 10, 10], [0, 0, 0, 0]]],  # the second digit out of view
        ],
        dtype=float,
    )
    np.testing.assert_allclose(miscounts.largest_overlap(boxes)[:, 0], [1 / 3, 0.0, 0.0])


def test_miscounts_by_digits_frame_and_persistence(miscounts):
    # Four two-digit sequences of 3 frames: one split from the first frame on (3, 3, 3), one
    # dropping a digit in the last frame (2, 2, 1), two right; one one-digit sequence, right.
    inferred = np.array([[3, 3, 3], [2, 2, 1], [2, 2, 2], [2, 2, 2], [1, 1, 1]])
    digits = np.array([2, 2, 2, 2, 1])
    boxes = np.zeros((5, 3, 2, 4))
    boxes[..., 2:] = 4.0
    boxes[:, :, 1, 0] = 10.0  # the two digits never overlap ...
    boxes[1, 2, 1, 0] = 0.0  # ... but for the dropped one, on its first digit in frame 3
    boxes[0, :, 1] = [0.0, 10.0, 4.0, 4.0]  # the split sequence's pair is vertical, the others not
    report = miscounts.miscounts(inferred, digits, boxes)
    two = report["2"]
    assert two["sequences"] == 4
    assert two["miscounted"] == pytest.approx(4 / 12)
    assert two["too_high"] == pytest.approx(3 / 12) and two["too_low"] == pytest.approx(1 / 12)
    assert two["miscounted_by_frame"] == pytest.approx([0.25, 0.25, 0.5])
    assert two["miscounted_first_frame"] == pytest.approx(0.25)
    assert two["persisting"] == 1.0 and two["sequences_with_a_miscount"] == 0.5
    apart, *_, full = two["by_largest_overlap"]
    assert apart["share_of_frames"] == pytest.approx(11 / 12) and apart[
        "miscounted"
    ] == pytest.approx(3 / 11)
    assert full["share_of_frames"] == pytest.approx(1 / 12) and full["miscounted"] == 1.0
    first = two["first_frame_by_orientation"]
    assert first["vertical"] == pytest.approx(
        {"share_of_sequences": 1 / 4, "too_high": 1.0, "too_low": 0.0}
    )
    assert first["horizontal"] == pytest.approx(
        {"share_of_sequences": 3 / 4, "too_high": 0.0, "too_low": 0.0}  # the drop is in frame 3
    )
    assert report["1"]["miscounted"] == 0.0 and report["1"]["persisting"] is None
    assert "by_largest_overlap" not in report["1"]
    assert "first_frame_by_orientation" not in report["1"]


def test_pair_orientation_by_box_centres(miscounts):
    boxes = np.array(
        [
            [
                [[0, 0, 10, 10], [2, 20, 10, 10]],  # farther apart in y
                [[0, 0, 10, 10], [20, 3, 10, 10]],  # farther apart in x
                [[0, 0, 4, 10], [20, 0, 0, 0]],  # the second digit out of view
            ]
        ],
        dtype=float,
    )
    assert miscounts.pair_orientation(boxes).tolist() == [["vertical", "horizontal", ""]]


def test_first_frame_count_prior_of_each_prior(miscounts):
    from types import SimpleNamespace

    from sqair_pyro.models.priors import CategoricalDiscoveryPrior, GeometricDiscoveryPrior

    def prior(p):
        return miscounts.first_frame_count_prior(SimpleNamespace(discovery_prior=p))

    assert prior(CategoricalDiscoveryPrior(3)) == pytest.approx([0.25] * 4)
    geometric = np.array([1.0, 0.01, 1e-4, 1e-6])  # init_rho 0.01: P(k) proportional to rho^k
    expected = (geometric / geometric.sum()).tolist()
    assert prior(CategoricalDiscoveryPrior(3, init_rho=0.01)) == pytest.approx(expected, rel=1e-4)
    assert prior(GeometricDiscoveryPrior(3, rho=0.5)) is None


def test_largest_fall_below_the_best_so_far(monkeypatch, tmp_path):
    dips = benchmark(monkeypatch, "validation_dips")
    assert dips.largest_fall([(2000, 10.0), (3000, 12.0), (4000, 5.0), (5000, 20.0)]) == (7.0, 4000)
    assert dips.largest_fall([(2000, 1.0), (3000, 2.0)]) == (0.0, None)  # never falls
    log = tmp_path / "metrics.csv"
    log.write_text("step,bound,val\n1000,1.0,50.0\n1500,2.0,\n2000,3.0,40.0\n2500,4.0,30.0\n")
    # the warm-up's validation (step 1,000) is not a best to fall from
    assert dips.validations(log, after=2000) == [(2000, 40.0), (2500, 30.0)]
    assert dips.largest_fall(dips.validations(log, after=2000)) == (10.0, 2500)


@pytest.mark.parametrize("name", ["mlp-air", "mlp-sqair"])
def test_posterior_means_scores_each_frame_of_air_and_sqair(monkeypatch, name):
    """AIR observes every frame at one site ``x``, SQAIR at ``x_t``: both give (B, T) scores
    in the frames' own order (the one bright frame scores lowest) summing to the trace's."""
    import pyro
    import torch

    from sqair_pyro.build import build
    from sqair_pyro.config import preset

    posterior_means = benchmark(monkeypatch, "posterior_means")
    torch.manual_seed(0)
    model, guide = build(preset(name, hidden=16, z_what_dim=4))
    images = torch.zeros(3, 4, 50, 50)
    images[1, 2] = 1.0
    pyro.set_rng_seed(0)
    scores = posterior_means.log_likelihood_per_frame(model, guide, images, ())
    assert scores.shape == (3, 4)
    assert divmod(int(scores.argmin()), 4) == (1, 2)
    pyro.set_rng_seed(0)
    guide_trace = pyro.poutine.trace(guide).get_trace(images)
    replayed = pyro.poutine.replay(model, trace=guide_trace)
    model_trace = pyro.poutine.trace(replayed).get_trace(images)
    observed = [s for s in model_trace.nodes.values() if s["type"] == "sample" and s["is_observed"]]
    total = sum(s["fn"].log_prob(s["value"]).sum() for s in observed)
    torch.testing.assert_close(scores.sum(), total)


@pytest.fixture
def lost_digits(monkeypatch):
    return benchmark(monkeypatch, "lost_digits")


def test_lost_digits_persistence_and_first_causes(lost_digits):
    """One sequence of three frames, two digits on a 50x50 canvas. Frame 0: an object on each
    digit, whose boxes overlap. Frame 1: digit 0 has no object near it (first lost after an
    overlap); digit 1, now at the right edge, is found. Frame 2: digit 0 is still lost and
    digit 1 is lost too (first lost after touching the edge)."""
    true = np.array(
        [[[[10, 10, 20, 20], [25, 10, 20, 20]],  # overlapping (x 25-30)
          [[10, 10, 20, 20], [30, 10, 20, 20]],  # digit 1 touches x = 50
          [[10, 10, 20, 20], [30, 20, 20, 20]]]],
        dtype=np.float32,
    )  # fmt: skip
    visible = np.ones((1, 3, 2), dtype=bool)
    pred = np.array(
        [[[[10, 10, 20, 20], [25, 10, 20, 20], [0, 0, 0, 0]],
          [[0, 0, 0, 0], [30, 10, 20, 20], [0, 0, 0, 0]],
          [[0, 0, 0, 0], [0, 30, 5, 5], [0, 0, 0, 0]]]],
        dtype=np.float32,
    )  # fmt: skip
    ids = np.array([[[0, 1, -1], [-1, 1, -1], [-1, 1, -1]]])
    lost = lost_digits.lost_digits(pred, ids, true, visible, 0.3)
    assert lost[0].tolist() == [[False, False], [True, False], [True, True]]
    # Pairs (t, t+1) with the digit a candidate in both: digit 0 lost->lost once, found->lost
    # once; digit 1 found->found once, found->lost once.
    assert lost_digits.persistence(lost, visible) == pytest.approx((1.0, 2 / 3))
    edge = lost_digits.touches_edge(true, visible, (50, 50))
    assert edge[0].tolist() == [[False, False], [False, True], [False, True]]
    assert lost_digits.overlaps_another(true, visible)[0, 0].tolist() == [True, True]
    assert lost_digits.first_loss_causes(lost, true, visible, (50, 50)) == {
        "overlap": 1,
        "edge": 1,
        "out_of_view": 0,
        "neither": 0,
    }
    errors = np.array([[1.0, 3.0, 6.0]])
    split = lost_digits.split_error(errors, lost.any(-1))
    assert split == pytest.approx(
        {"share_of_frames": 2 / 3, "squared_error_in": 4.5, "squared_error_out": 1.0,
         "share_of_squared_error": 0.9}
    )  # fmt: skip


def test_first_losses_need_a_found_frame_before_and_name_re_entries(lost_digits):
    """Digit 0 is lost from the first frame on: no first loss. Digit 1 is out of view in frame
    0 and lost as it enters in frame 1: out of view. No candidates: nothing lost; no error at
    all: no share of it."""
    true = np.zeros((1, 2, 2, 4), dtype=np.float32)
    true[0, :, 0] = [10, 10, 20, 20]
    true[0, 1, 1] = [30, 30, 20, 20]
    visible = np.array([[[True, False], [True, True]]])
    lost = np.array([[[True, False], [True, True]]])
    assert lost_digits.first_loss_causes(lost, true, visible, (50, 50)) == {
        "overlap": 0,
        "edge": 0,
        "out_of_view": 1,
        "neither": 0,
    }
    nothing = np.zeros((1, 2, 2), dtype=bool)
    pred = np.zeros((1, 2, 3, 4), dtype=np.float32)
    ids = np.full((1, 2, 3), -1)
    assert not lost_digits.lost_digits(pred, ids, true, nothing, 0.3).any()
    assert np.isnan(
        lost_digits.split_error(np.zeros((1, 2)), nothing.any(-1))["share_of_squared_error"]
    )


def test_the_best_glimpse_through_a_window_and_what_lies_outside_it(monkeypatch):
    """``best_glimpse_error``: a frame that is a glimpse (values in [0, 1]) placed through a
    window is drawn back exactly (error 0 to 1e-6); a pixel outside every window adds its
    own square; a value above the decoder's range (1.5 inside a one-pixel-per-pixel window)
    leaves 0.5 squared; single-object frames are those with one object and one digit."""
    import torch

    from sqair_pyro.nn.spatial_transformer import place, placement_weights

    floor = benchmark(monkeypatch, "reconstruction_floor")
    generator = torch.Generator().manual_seed(0)
    z_where = torch.tensor([[0.4, 0.5, -0.1, 0.2], [0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    glimpses = torch.rand(2, 10, 10, generator=generator, dtype=torch.float64)
    frames = place(glimpses, z_where, (20, 20))
    frames[1, 0, 0] = 0.7  # outside the second window (its middle half)
    b_y, b_x = placement_weights(z_where, (10, 10), (20, 20))
    errors = floor.best_glimpse_error(frames, b_y, b_x, iterations=2000)
    assert errors[0] < 1e-6
    assert errors[1] == pytest.approx(0.49, abs=1e-6)
    exact = torch.tensor([[1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)  # 10 px over 10 px
    bright = torch.zeros(1, 10, 10, dtype=torch.float64)
    bright[0, 4, 4] = 1.5
    errors = floor.best_glimpse_error(bright, *placement_weights(exact, (10, 10), (10, 10)))
    assert errors[0] == pytest.approx(0.25, abs=1e-6)
    present = np.array([[[1, 0], [1, 1]], [[0, 0], [0, 1]]], dtype=bool)
    visible = np.array([[[0, 1], [1, 0]], [[1, 0], [1, 0]]], dtype=bool)
    sequence, frame, slot, digit = floor.single_object_frames(present, visible)
    assert sequence.tolist() == [0, 1] and frame.tolist() == [0, 1]
    assert slot.tolist() == [0, 1] and digit.tolist() == [1, 0]


def test_the_best_z_what_for_a_fixed_decoder(monkeypatch):
    """``best_what_error``: frames a small decoder draws from z_what of norm 0.5 through
    their windows are drawn back from z = 0 to within 1e-3 squared (the N(0, I) pull on a
    z that small is weaker than the likelihood's at obs_sd 0.05) and the decoder's weights are
    left as they were; a start already at the optimum stays there."""
    import torch

    from sqair_pyro.nn.spatial_transformer import placement_weights

    floor = benchmark(monkeypatch, "reconstruction_floor")
    torch.manual_seed(0)
    decoder = torch.nn.Sequential(torch.nn.Linear(4, 36), torch.nn.Sigmoid(),
                                  torch.nn.Unflatten(-1, (6, 6)))  # fmt: skip
    decoder.requires_grad_(False)
    before = [p.clone() for p in decoder.parameters()]
    z_true = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1) * 0.5
    z_where = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.4, 0.6, 0.2, -0.1], [0.7, 0.5, -0.2, 0.1]])
    b_y, b_x = placement_weights(z_where, (6, 6), (12, 12))
    frames = b_y @ decoder(z_true) @ b_x.transpose(-1, -2)
    errors, norms = floor.best_what_error(decoder, torch.zeros(3, 4), frames, b_y, b_x, 0.05,
                                          iterations=2000, lr=0.02)  # fmt: skip
    assert errors.max() < 1e-3 and norms == pytest.approx(torch.full((3,), 0.5), abs=0.1)
    assert all(torch.equal(a, b) for a, b in zip(before, decoder.parameters(), strict=True))
    blank = torch.zeros(1, 12, 12)
    errors, norms = floor.best_what_error(
        lambda z: torch.zeros(*z.shape[:-1], 6, 6) + 0 * z.sum(),
        torch.zeros(1, 4),
        blank,
        b_y[:1],
        b_x[:1],
        0.3,
        iterations=10,
    )
    assert errors.item() == 0 and norms.item() == 0


def test_refitting_a_decoder_with_free_codes(monkeypatch):
    """``refit_decoder``: a decoder fitted with free codes (started 0.5 off) to 64 frames that
    another decoder of its architecture drew (obs_sd 0.05) errs at least 10x less over its
    last 100 steps than over its first 100, its weights change and the codes handed in do not;
    afterwards its weights are frozen. The fit depends on the generator alone (the same
    generator under another global seed gives the same errors, another generator others), and
    the codes do learn: with the true decoder and a decoder rate of 0 the error still falls
    at least 10x."""
    import torch

    from sqair_pyro.nn.spatial_transformer import placement_weights

    floor = benchmark(monkeypatch, "reconstruction_floor")

    def decoder(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(4, 36), torch.nn.Sigmoid(),
                                   torch.nn.Unflatten(-1, (6, 6)))  # fmt: skip

    teacher = decoder(0).requires_grad_(False)
    noise = torch.Generator().manual_seed(1)
    codes = torch.randn(64, 4, generator=noise)
    start = codes + 0.5 * torch.randn(64, 4, generator=noise)
    z_where = torch.tensor([0.5, 0.5, 0.0, 0.0]).expand(64, 4)
    b_y, b_x = placement_weights(z_where, (6, 6), (12, 12))
    frames = b_y @ teacher(codes) @ b_x.transpose(-1, -2)

    def fit(student: torch.nn.Module, generator_seed: int, global_seed: int, lr: float = 1e-2):
        handed = start.clone()
        torch.manual_seed(global_seed)
        generator = torch.Generator().manual_seed(generator_seed)
        errors, fitted = floor.refit_decoder(
            student, handed, frames, b_y, b_x, 0.05, 1500, batch_size=32, lr=lr, generator=generator
        )
        assert torch.equal(handed, start) and not any(p.requires_grad for p in student.parameters())
        assert fitted.shape == start.shape and not torch.equal(fitted, start)
        return errors

    student = decoder(2)
    before = [p.clone() for p in student.parameters()]
    errors = fit(student, 3, 10)
    assert sum(errors[-100:]) * 10 < sum(errors[:100])
    assert not any(torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))
    assert fit(decoder(2), 3, 11) == errors
    assert fit(decoder(2), 4, 10) != errors
    codes_only = fit(decoder(0), 3, 10, lr=1e-12)
    assert sum(codes_only[-100:]) * 10 < sum(codes_only[:100])


def test_reconstruction_floor_refits_and_writes_the_refitted_checkpoint(
    monkeypatch, tiny_data, tmp_path
):
    """``--refit-steps`` on the shipped MLP-AIR and the tiny test split (refitted to the same
    frames): the report has the refit, the refitted floor and the amortised encoders' errors
    (non-negative, on both splits), and ``--refit-out`` holds the source's guide and config
    with a decoder that differs from the source's (and nothing else of the model)."""
    import json

    import torch

    from sqair_pyro.checkpoint import load_checkpoint
    from sqair_pyro.pretrained import pretrained_path

    source, out = pretrained_path("mlp-air"), tmp_path / "new" / "refit.pt"
    benchmark(monkeypatch, "reconstruction_floor").main([
        "--checkpoint", str(source), "--data", str(tiny_data / "test.npz"), "--sequences", "20",
        "--frames", "3", "--what-iterations", "5", "--iterations", "5", "--refit-steps", "3",
        "--refit-data", str(tiny_data / "test.npz"), "--refit-sequences", "20",
        "--refit-out", str(out), "--encoder-steps", "2", "--json", str(tmp_path / "floor.json"),
    ])  # fmt: skip
    report = json.loads((tmp_path / "floor.json").read_text())
    assert report["refit"]["steps"] == 3 and report["refit"]["frames"] > 0
    assert report["decoder_floor_refitted"]["all"] >= 0
    amortised = report["amortised"]
    assert set(amortised) == {"guide_codes", "refitted_codes"}
    assert all(set(v) == {"train", "test"} and min(v.values()) >= 0 for v in amortised.values())
    config, model, guide, _ = load_checkpoint(out)
    config0, model0, guide0, _ = load_checkpoint(source)
    assert config == config0
    guides = zip(guide.state_dict().values(), guide0.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in guides)
    new, old = model.state_dict(), model0.state_dict()
    changed = {key for key in new if not torch.equal(new[key], old[key])}
    assert changed and all(key.startswith("likelihood.decoder.") for key in changed)


def test_reconstruction_floor_of_the_shipped_air_on_held_out_frames(
    monkeypatch, tiny_data, tmp_path
):
    """A whole run on the shipped MLP-AIR: one-object frames are found, the default floor is
    at the size its decoder draws (28x28), no floor is negative, and the best glimpse through
    each window errs no more than the model's own drawing through it (tolerance 1e-6)."""
    report = report_on_shipped(
        monkeypatch, "reconstruction_floor", "mlp-air", tiny_data, tmp_path / "floor.json", 3
    )
    assert report["frames"] > 0 and list(report["window_floor"]) == ["28x28"]
    window = report["window_floor"]["28x28"]["all"]
    assert 0 <= window <= report["model"] + 1e-6
    assert report["true_box_floor"] >= 0 and report["windows"]["width_ratio_median"] > 0
    # the decoder's glimpses lie in (0, 1): none draws better than the best such glimpse
    assert report["decoder_floor"]["all"] >= window - 1e-4
    assert report["decoder_floor"]["z_what_norm"] > 0
    assert "refit" not in report and "decoder_floor_refitted" not in report


def test_appearance_drift_arithmetic(monkeypatch):
    """``followed_digits``: frames where one object follows one digit in the same slot, with
    the first frame of each run; ``pose_in_window``: a digit 10 px wide, 2 px right of the
    centre of a 20 px window, sits at +0.1 and covers 0.5 of it; ``explained_share`` of an
    affine function is 1 and of noise near 0 (tolerance 0.05 at 2,000 rows); the decoder's
    sensitivity to a dimension of a linear decoder is ``0.3^2 |w_d|^2`` exactly."""
    import torch

    drift = benchmark(monkeypatch, "appearance_drift")
    present = np.zeros((2, 5, 2), dtype=bool)
    present[0, :, 0] = True  # slot 0 throughout
    present[1, :2, 1] = True
    present[1, 2:, 0] = True  # slot changes at frame 2
    visible = np.zeros((2, 5, 2), dtype=bool)
    visible[0, :, 1] = True
    visible[0, 2, 0] = True  # two digits in frame 2 break the run
    visible[1, :, 0] = True
    assert drift.followed_digits(present, visible) == [
        (0, 1, 0, 1, 0), (0, 4, 0, 1, 3), (1, 1, 1, 0, 0), (1, 3, 0, 0, 2), (1, 4, 0, 0, 2)
    ]  # fmt: skip
    windows = np.array([[0.0, 0.0, 20.0, 20.0]])
    boxes = np.array([[7.0, 5.0, 10.0, 10.0]])
    np.testing.assert_allclose(drift.pose_in_window(windows, boxes), [[0.1, 0.0, 0.5, 0.5]])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3))
    assert drift.explained_share(x, x @ rng.normal(size=(3, 2)) + 1.0) == pytest.approx(1.0)
    assert abs(drift.explained_share(x, rng.normal(size=(2000, 2)))) < 0.05
    weights = torch.tensor([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]])
    sensitivity = drift.decoder_sensitivity(lambda z: (z @ weights).unflatten(-1, (2, 2)), 3)
    np.testing.assert_allclose(sensitivity, [0.09 * 5, 0.0, 0.09 * 1], rtol=1e-5)


def test_propagated_what_by_hand(monkeypatch):
    """``propagated_what`` on two sequences, one propagated object present (posterior
    N((1, 0, 0), 0.5^2 I) against the prior N(0, I)) and one absent (not counted): per
    dimension KL ``log 2 + (0.25 + mu^2) / 2 - 1/2`` over 2 sequences, drift ``|mu|``."""
    import math

    import pyro
    import pyro.distributions as dist
    import torch

    drift = benchmark(monkeypatch, "appearance_drift")
    loc = torch.tensor([[1.0, 0.0, 0.0], [5.0, 5.0, 5.0]])  # the absent object's is ignored

    def model(images):
        pyro.sample("z_what_prop_1_0", dist.Normal(torch.zeros(2, 3), 1.0).to_event(1))

    def guide(images):
        pyro.sample("z_what_prop_1_0", dist.Normal(loc, 0.5).to_event(1))
        pyro.sample("z_pres_prop_1_0", dist.Bernoulli(torch.tensor([[1.0], [0.0]])).to_event(1))

    stats = drift.propagated_what(model, guide, torch.zeros(2, 1, 4, 4), ())
    kl = [(math.log(2) + (0.25 + m**2) / 2 - 0.5) / 2 for m in (1.0, 0.0, 0.0)]
    assert stats["kl_per_sequence"] == pytest.approx(kl, rel=1e-5)
    assert stats["drift_rms"] == pytest.approx([1.0, 0.0, 0.0], abs=1e-6)
    assert stats["posterior_scale"] == pytest.approx([0.5] * 3)
    assert stats["prior_scale"] == pytest.approx([1.0] * 3)
    assert stats["objects_per_sequence"] == 0.5
    with pytest.raises(ValueError, match="not a SQAIR checkpoint"):
        drift.propagated_what(lambda images: None, lambda images: None, torch.zeros(2, 1), ())


def test_appearance_drift_of_the_shipped_sqair(monkeypatch, tiny_data, tmp_path):
    """A whole run on the shipped MLP-SQAIR: no dimension's KL negative, scales positive,
    followed frames found, each of the four errors non-negative."""
    report = report_on_shipped(
        monkeypatch, "appearance_drift", "mlp-sqair", tiny_data, tmp_path / "drift.json", 4
    )
    assert (np.array(report["per_dimension"]["kl_per_sequence"]) >= -1e-6).all()
    assert report["posterior_scale"] > 0 and report["prior_scale"] > 0
    followed = report["followed_frames"]
    assert followed["frames"] > 0
    assert min(followed["squared_error_with_z_what_of"].values()) >= 0
    assert len(followed["squared_error_with_z_what_of"]) == 4
    assert 0 <= followed["frames_digit_wholly_in_view"] <= followed["frames"]
