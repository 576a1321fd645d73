"""The Pyro programs: priors, site names, slots and identities, parameter counts."""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch

from sqair_pyro.build import build, num_parameters
from sqair_pyro.config import preset
from sqair_pyro.models.priors import CategoricalDiscoveryPrior, GeometricDiscoveryPrior
from sqair_pyro.models.state import ObjectState, compact


def _count_probs_from_continue(rho: torch.Tensor) -> torch.Tensor:
    """P(D = d) from the stick-breaking continue probabilities rho_0..rho_{N-1}."""
    n = rho.shape[-1]
    probs = []
    alive = torch.ones_like(rho[..., 0])
    for d in range(n + 1):
        stop = 1 - rho[..., d] if d < n else torch.ones_like(alive)
        probs.append(alive * stop)
        if d < n:
            alive = alive * rho[..., d]
    return torch.stack(probs, -1)


@pytest.mark.parametrize("t", [0, 3])
def test_stick_breaking_is_the_categorical_of_eq8(t):
    """prod of per-slot Bernoullis == Categorical(D; N - P_t) renormalised, for every P_t."""
    torch.manual_seed(0)
    prior = CategoricalDiscoveryPrior(max_objects=4)
    with torch.no_grad():
        prior.base.normal_()
        prior.from_propagated[-1].weight.normal_()
    num_propagated = torch.tensor([0, 1, 2, 3, 4])
    rho = prior.continue_probs(num_propagated, t)
    got = _count_probs_from_continue(rho)
    logits = prior.count_logits(num_propagated, t)
    allowed = torch.arange(5) <= (4 - num_propagated).unsqueeze(-1)
    expected = torch.softmax(logits.masked_fill(~allowed, -math.inf), -1)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert (got[~allowed] == 0).all()


def test_geometric_prior_is_geometric():
    prior = GeometricDiscoveryPrior(max_objects=3, rho=0.3)
    got = _count_probs_from_continue(prior.continue_probs(torch.tensor([0, 2]), 0))
    torch.testing.assert_close(got[0], torch.tensor([0.7, 0.21, 0.063, 0.027]))
    torch.testing.assert_close(got[1], torch.tensor([0.7, 0.3, 0.0, 0.0]))


def test_first_frame_prefers_objects_later_frames_prefer_none():
    """The +10 time-step bias on "no new objects" after the first frame (as in the authors'
    original implementation)."""
    prior = CategoricalDiscoveryPrior(max_objects=3)
    rho0 = prior.continue_probs(torch.tensor([0]), 0)
    rho1 = prior.continue_probs(torch.tensor([0]), 1)
    assert rho0[0, 0] > 0.5 and rho1[0, 0] < 1e-3


def test_compact_keeps_present_objects_in_order_with_identities():
    state = ObjectState.empty((2,), 3, hidden_size=2, z_what_dim=1)
    state.ids = torch.tensor([[0, 1, 2], [5, -1, -1]]).unsqueeze(-1)
    state.next_id = torch.tensor([3, 6]).view(2, 1, 1)
    prop = {
        "z_pres": torch.tensor([[1.0, 0, 1], [1, 0, 0]]).unsqueeze(-1),
        "z_where": torch.arange(24.0).view(2, 3, 4),
        "z_what": torch.tensor([[10.0, 11, 12], [13, 14, 15]]).unsqueeze(-1),
    }
    disc = {
        "z_pres": torch.tensor([[1.0, 0, 0], [1, 1, 0]]).unsqueeze(-1),
        "z_where": -torch.arange(24.0).view(2, 3, 4),
        "z_what": torch.tensor([[20.0, 21, 22], [23, 24, 25]]).unsqueeze(-1),
    }
    out = compact(state, prop, torch.zeros(2, 3, 2), disc)
    assert out.ids.squeeze(-1).tolist() == [[0, 2, 3], [5, 6, 7]]
    assert out.z_what.squeeze(-1).tolist() == [[10, 12, 20], [13, 23, 24]]
    assert out.z_pres.squeeze(-1).tolist() == [[1, 1, 1], [1, 1, 1]]
    assert out.next_id.flatten().tolist() == [4, 8]


def _sites(fn, *args, observed=False):
    trace = poutine.trace(fn).get_trace(*args)
    return {
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and site["is_observed"] == observed
    }


@pytest.mark.parametrize("name", ["mlp-air", "conv-air", "mlp-sqair", "conv-sqair"])
def test_guide_sites_mirror_the_model(name):
    """Every latent site of the model has a guide site of the same name, and vice versa."""
    pyro.set_rng_seed(0)
    config = preset(name)
    model, guide = build(config)
    images = torch.rand(2, 4, 50, 50) if config.model == "sqair" else torch.rand(2, 50, 50)
    model_sites = _sites(model, images)
    assert _sites(guide, images) == model_sites
    frames = [f"x_{t}" for t in range(4)] if config.model == "sqair" else ["x"]
    assert _sites(model, images, observed=True) == set(frames)  # one observed site per frame
    assert any("prop_3_2" in s for s in model_sites) == (config.model == "sqair")


@pytest.mark.parametrize(
    ("name", "paper"), [("mlp-air", 1.7e6), ("mlp-sqair", 2.9e6), ("conv-sqair", 2.6e6)]
)
def test_parameter_counts_match_the_paper(name, paper):
    """App. D.2: trainable parameters within 10% of the paper's."""
    count = num_parameters(*build(preset(name)))
    assert abs(count - paper) / paper < 0.10, count


def test_the_pedestrian_model_as_app_e_describes_it():
    """App. E's architecture: 28x12 glimpses decoded from 64 maps of 7x3, 64x64 frames, 128
    units. Built as described it has 1.68M parameters, not the paper's stated 3.5M (the
    description accounts for no more; the count is pinned so a change is seen)."""
    config = preset("conv-sqair-pedestrians")
    model, guide = build(config)
    assert num_parameters(model, guide) == 1_684_163
    glimpses = model.likelihood.decoder(torch.zeros(2, config.z_what_dim))
    assert glimpses.shape == (2, 28, 12)
    latents = guide(torch.rand(2, 3, 64, 64))
    assert latents["z_where"].shape == (2, 3, 3, 4)


def test_sqair_objects_keep_identities_and_never_return():
    """A propagated object keeps its id; a vanished id never reappears; at most N present."""
    pyro.set_rng_seed(1)
    model, guide = build(preset("mlp-sqair"))
    with torch.no_grad():
        latents = guide(torch.rand(16, 6, 50, 50))
    ids, pres = latents["ids"], latents["z_pres"][..., 0]
    assert ((ids >= 0) == pres.bool()).all()
    assert (pres.sum(-1) <= 3).all()
    for b in range(ids.shape[0]):
        seen_gone: set[int] = set()
        for t in range(1, ids.shape[1]):
            before, now = set(ids[b, t - 1].tolist()) - {-1}, set(ids[b, t].tolist()) - {-1}
            seen_gone |= before - now
            assert not (now & seen_gone), "an object came back after it vanished"
            assert len(now) == int(pres[b, t].sum())


def test_prior_samples_whole_sequences_with_identities():
    pyro.set_rng_seed(2)
    model, _ = build(preset("mlp-sqair", categorical_init_rho=None))  # uniform counts
    with torch.no_grad():
        out = model(None, num_frames=5, batch_size=8)
    assert out["canvas"].shape == (8, 5, 50, 50)
    assert out["ids"].shape == (8, 5, 3)
    # The first frame holds some objects and objects persist (survival bias +10).
    assert out["z_pres"][:, 0].sum() > 0
    kept = (out["ids"][:, 1:] >= 0) & (out["ids"][:, 1:] == out["ids"][:, :-1])
    assert kept.sum() > 0


def test_imagine_continues_the_observed_objects():
    """Posterior predictive: observed frames are reconstructions, then the prior runs on."""
    from sqair_pyro.predict import imagine, reconstruct

    model, guide = build(preset("mlp-sqair", hidden=32, z_what_dim=8))
    observed = torch.rand(4, 3, 50, 50)
    pyro.set_rng_seed(5)
    out = imagine(model, guide, observed, num_future=4, num_samples=2)
    assert out["canvas"].shape == (2, 4, 7, 50, 50)
    assert out["ids"].shape == (2, 4, 7, 3)
    pyro.set_rng_seed(5)
    seen = reconstruct(model, guide, observed)
    torch.testing.assert_close(out["canvas"][0, :, :3], seen["canvas"])
    # Objects present at the last observed frame mostly live on (survival bias +10).
    last = out["ids"][:, :, 2]
    carried = (last[..., None] == out["ids"][:, :, 3].unsqueeze(-2)).any(-1) & (last >= 0)
    assert carried.sum() >= 0.9 * (last >= 0).sum() > 0


def test_imagine_at_the_means_follows_the_prior_means():
    """With ``means`` the observed frames use the posterior means and each imagined frame the
    prior's means given the previous one: only z_pres is drawn, so two runs with different
    seeds agree in every frame up to the first where their objects differ."""
    from sqair_pyro.predict import imagine, reconstruct

    model, guide = build(preset("mlp-sqair", hidden=32, z_what_dim=8))
    observed = torch.rand(4, 3, 50, 50)
    runs = []
    for seed in (1, 2):
        pyro.set_rng_seed(seed)
        runs.append(imagine(model, guide, observed, num_future=2, means=True))
    a, b = ({k: v[0] for k, v in run.items()} for run in runs)
    same = (a["z_pres"] == b["z_pres"]).all(-1).all(-1)  # (B, T) frames with the same objects
    same = same.cumprod(-1).bool()  # ... and the same in every earlier frame
    assert same[:, :4].any()
    torch.testing.assert_close(a["z_what"][same], b["z_what"][same])
    torch.testing.assert_close(a["canvas"][same], b["canvas"][same])
    pyro.set_rng_seed(1)
    seen = reconstruct(model, guide, observed, means=True)
    torch.testing.assert_close(seen["z_what"][:, :3][same[:, :3]], a["z_what"][:, :3][same[:, :3]])


def test_conv_sqair_trains_a_step():
    """The CONV variant's shared CNN, subpixel decoder and the objective fit together."""
    from sqair_pyro.infer import VIMCO_ELBO

    pyro.set_rng_seed(3)
    model, guide = build(preset("conv-sqair"))
    images = torch.rand(2, 3, 50, 50)
    loss = VIMCO_ELBO(num_particles=2, max_plate_nesting=1).differentiable_loss(
        model, guide, images
    )
    loss.backward()
    shared = guide.image_encoder.cnn
    assert shared is guide.propagation.glimpse_encoder.cnn  # one CNN for both encoders
    assert shared.net[0].weight.grad.abs().sum() > 0
    assert model.likelihood.decoder.net[0].weight.grad.abs().sum() > 0


def test_rendering_the_compacted_slots_equals_rendering_every_candidate():
    """The model draws the N compacted slots: the same canvas as all 2N candidates."""
    from sqair_pyro.models.state import cat_slots

    torch.manual_seed(4)
    model, _ = build(preset("mlp-sqair", hidden=16, z_what_dim=4))
    state = ObjectState.empty((5,), 3, hidden_size=16, z_what_dim=4)
    prop_pres = torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0], [1, 0, 0]])
    disc_pres = torch.tensor([[1.0, 0, 0], [1, 1, 1], [0, 0, 0], [1, 1, 0], [1, 1, 0]])

    def latents(pres):
        return {
            "z_pres": pres.unsqueeze(-1),
            "z_where": torch.randn(5, 3, 4) * 0.5,
            "z_what": torch.randn(5, 3, 4),
        }

    prop, disc = latents(prop_pres), latents(disc_pres)
    compacted = compact(state, prop, torch.zeros(5, 3, 16), disc)
    render = model.likelihood.render
    both = {k: cat_slots([prop[k], disc[k]]) for k in prop}
    torch.testing.assert_close(
        render(compacted.z_what, compacted.z_where, compacted.z_pres),
        render(both["z_what"], both["z_where"], both["z_pres"]),
    )


def test_the_discovery_where_prior_may_be_shaped_per_axis():
    """A [x, y] scale logit (tall, narrow walkers) centres p^D(z_where) on that shape; one
    number keeps square windows; a tuple or a NaN in the pair is handled."""
    config = preset("conv-sqair-pedestrians", where_scale_logit=(-1.4, -0.2))
    assert config.where_scale_logit == [-1.4, -0.2]
    with pytest.raises(ValueError, match="where_scale_logit must be finite"):
        preset("conv-sqair-pedestrians", where_scale_logit=[float("nan"), 0.0])
    model, _ = build(config)
    loc = model.what_where_prior.where_loc
    torch.testing.assert_close(loc, torch.tensor([-1.4, -0.2, 0.0, 0.0]))
    square, _ = build(preset("conv-sqair-pedestrians", where_scale_logit=-0.5))
    torch.testing.assert_close(square.what_where_prior.where_loc[:2], torch.tensor([-0.5, -0.5]))


def test_the_discovery_where_prior_may_order_slots_top_to_bottom():
    """``where_slot_shift_y`` centres the vertical shift of new slot i of N at s * (2i/(N-1) - 1)
    at every discovery site of the model; 0 keeps the paper's prior, the same for every slot."""
    from models.air import discover

    def vertical_means(shift: float) -> list[float]:
        model, _ = build(preset("mlp-air", where_slot_shift_y=shift))
        prior = model.what_where_prior
        rho = torch.ones(2, 3)
        trace = poutine.trace(discover).get_trace(rho, prior, lambda kind, i: f"{kind}_{i}")
        means = []
        for i in range(3):
            z_where = torch.zeros(4)
            lp = [trace.nodes[f"z_where_{i}"]["fn"].log_prob(z_where + torch.tensor([0, 0, 0, y]))
                  for y in (-0.1, 0.0, 0.1)]  # fmt: skip
            # the log density of a Gaussian is a parabola: its vertex is the mean
            a, b, c = (v[0].item() for v in lp)
            means.append(0.1 * (a - c) / (2 * (a - 2 * b + c)))
        return means

    assert vertical_means(0.0) == pytest.approx([0.0, 0.0, 0.0], abs=1e-4)
    assert vertical_means(0.6) == pytest.approx([-0.6, 0.0, 0.6], abs=1e-4)
    with pytest.raises(ValueError, match="where_slot_shift_y must be finite"):
        preset("mlp-air", where_slot_shift_y=float("inf"))


def test_discovery_steps_over_found_objects_as_over_its_own():
    """``DiscoveryRNN.step_over``: after stepping over objects found elsewhere (in any slots,
    with gaps), the RNN decides the next object exactly as after finding them itself (AIR's
    reading: with ``discovery_reads_difference`` its first step reads the whole frame)."""
    pyro.set_rng_seed(0)
    config = preset(
        "mlp-sqair", hidden=32, z_what_dim=8, init_from=None, discovery_reads_difference=False
    )
    guide = build(config)[1]
    discovery = guide.discovery
    images = torch.rand(4, 50, 50)
    context, extra = guide.image_encoder(images), torch.rand(4, 32)

    def site(kind: str, i: int) -> str:
        return f"{kind}_{i}"

    on = {f"z_pres_{i}": torch.ones(4, 1) for i in range(2)}
    air = poutine.trace(poutine.condition(discovery, on)).get_trace(
        images, context, None, site, extra
    )
    latents = {k: air.nodes["_RETURN"]["value"][k] for k in ("z_pres", "z_where", "z_what")}
    # The two found objects in slots 0 and 2, slot 1 empty (an object that vanished).
    found = {k: v.clone() for k, v in latents.items()}
    for k in found:
        found[k][:, 2], found[k][:, 1] = latents[k][:, 1], 0
    found["z_pres"][:, 2] = 1
    after = poutine.trace(discovery).get_trace(
        images, context, torch.full((4,), 1), site, extra, found
    )

    def probs(trace, name):
        return trace.nodes[name]["fn"].base_dist.probs

    torch.testing.assert_close(probs(after, "z_pres_0"), probs(air, "z_pres_2"))
    assert not torch.allclose(probs(after, "z_pres_0"), probs(air, "z_pres_0"))


@pytest.mark.parametrize("on", [False, True])
def test_the_sqair_guide_steps_over_propagated_objects_when_asked(on, monkeypatch):
    """``discovery_steps_over_propagated`` reaches the guide: discovery steps over the objects
    propagated into frames after the first (never the first, never during the warm-up's
    frames without discovery), and only when the option is on; AIR refuses it."""
    from sqair_pyro.guides.air import DiscoveryRNN

    calls = []
    original = DiscoveryRNN.step_over

    def spy(self, found, *args):
        calls.append(found["z_pres"].shape)
        return original(self, found, *args)

    monkeypatch.setattr(DiscoveryRNN, "step_over", spy)
    config = preset("mlp-sqair", hidden=32, z_what_dim=8, init_from=None)
    guide = build(config.replace(discovery_steps_over_propagated=on))[1]
    guide(torch.rand(2, 4, 50, 50))
    assert len(calls) == (3 if on else 0)
    calls.clear()
    guide(torch.rand(2, 4, 50, 50), discover_after_first_frame=False)
    assert calls == []
    with pytest.raises(ValueError, match="needs SQAIR"):
        build(preset("mlp-air", discovery_steps_over_propagated=True, init_from=None))


def test_unexplained_blacks_out_the_windows_of_present_objects():
    """``unexplained``: a frame of ones keeps its pixels outside every present object's window
    and loses them inside (overlapping windows take it to 0, never below); an absent object
    masks nothing."""
    from sqair_pyro.guides.sqair import unexplained

    logit = math.log(0.4 / 0.6)  # windows of 0.4 of the canvas: 20 x 20 pixels of 50 x 50
    z_where = torch.tensor(
        [[[logit, logit, -0.5, -0.5], [logit, logit, -0.4, -0.4], [logit, logit, 0.5, 0.5]]]
    )
    z_pres = torch.tensor([[[1.0], [1.0], [0.0]]])
    frame = unexplained(torch.ones(1, 50, 50), {"z_where": z_where, "z_pres": z_pres}, (20, 20))
    assert frame.shape == (1, 50, 50) and frame.min() >= 0

    def centre(shift: float) -> int:  # the pixel at a window centre's shift
        return round((shift + 1) / 2 * 50)

    assert frame[0, centre(-0.5), centre(-0.5)] == 0  # inside the first window
    assert frame[0, centre(-0.45), centre(-0.45)] == 0  # inside both
    assert frame[0, centre(0.5), centre(0.5)] == 1  # the absent object's place
    assert frame[0, 2, 48] == 1  # far from every window
    assert 0.1 < frame.mean() < 0.95


def test_residual_is_what_the_earlier_objects_leave_undrawn():
    """``residual``: the frame less the drawing, never below 0 (an object that overdraws
    leaves nothing there, not a negative image)."""
    from sqair_pyro.guides.air import residual

    frame = torch.tensor([[0.0, 0.5, 1.0, 1.0]])
    drawn = torch.tensor([[0.3, 0.5, 0.25, 0.0]])
    torch.testing.assert_close(residual(frame, drawn), torch.tensor([[0.0, 0.0, 0.75, 1.0]]))


def _use_decoder(guide: torch.nn.Module, option: str, decoder: object) -> None:
    """Give ``guide`` another decoder for ``option`` (None: the option off)."""
    from sqair_pyro.nn.modules import Borrowed

    borrowed = None if decoder is None else Borrowed(decoder)
    if option == "propagation_reads_residual":
        guide.decoder = borrowed
    else:
        guide.discovery.reads_difference = borrowed


@pytest.mark.parametrize(
    ("name", "option", "first", "later"),
    [
        ("mlp-sqair", "propagation_reads_residual", "z_what_prop_1_0", "z_what_prop_1_1"),
        ("mlp-sqair", "discovery_reads_difference", "z_where_disc_0_0", "z_where_disc_0_1"),
        ("mlp-air", "discovery_reads_difference", "z_where_0", "z_where_1"),
    ],
)
def test_the_guides_read_what_the_objects_before_leave_when_asked(name, option, first, later):
    """``propagation_reads_residual`` (propagation's glimpses) and ``discovery_reads_difference``
    (DAIR: discovery's context after its first step) hold the model's own decoder without
    owning its weights (not in the guide's parameters or state); with a decoder that draws
    nothing each is the paper's guide draw for draw, and with the real decoder the first
    object of a frame is unchanged (nothing is drawn before it) while later ones see less.
    Propagation's residual needs SQAIR, both need objects (not the VRNN); a copy of the guide
    alone reads the same decoder, a copy of the pair its copy of the decoder."""
    import copy

    config = preset(name, hidden=32, z_what_dim=8, init_from=None, discovery_pres_bias=4.0)
    config = config.replace(**{"discovery_reads_difference": False, option: True})
    model, guide = build(config)
    decoder = model.likelihood.decoder
    copied_model, copied_guide = copy.deepcopy((model, guide))
    for g, d in ((guide, decoder), (copy.deepcopy(guide), decoder), (copied_guide, None)):
        held = g.decoder if option == "propagation_reads_residual" else g.discovery.reads_difference
        assert held.module is (d or copied_model.likelihood.decoder)
    assert not {id(p) for p in decoder.parameters()} & {id(p) for p in guide.parameters()}
    assert not any("decoder" in key for key in guide.state_dict())
    images = torch.rand(4, 3, 50, 50)

    def trace(draws: object) -> pyro.poutine.Trace:
        _use_decoder(guide, option, draws)
        pyro.set_rng_seed(0)
        with torch.no_grad():
            return pyro.poutine.trace(guide).get_trace(images)

    paper, nothing_drawn = trace(None), trace(lambda z: torch.zeros(len(z), *config.glimpse_size))
    reading = trace(decoder)
    assert paper.nodes.keys() == reading.nodes.keys()
    for site in paper.stochastic_nodes:
        torch.testing.assert_close(paper.nodes[site]["value"], nothing_drawn.nodes[site]["value"])
    torch.testing.assert_close(paper.nodes[first]["value"], reading.nodes[first]["value"])
    assert not torch.allclose(paper.nodes[later]["value"], reading.nodes[later]["value"])
    if name == "mlp-air":
        with pytest.raises(ValueError, match="needs SQAIR"):
            build(preset(name, propagation_reads_residual=True, init_from=None))
    with pytest.raises(ValueError, match="needs AIR or SQAIR"):
        build(preset("mlp-vrnn", **{option: True}))


def test_propagation_aligns_each_window_on_the_previous_appearance():
    """``propagation_aligns_window``: the propagated windows' posterior means move (their
    shift only, not their scale) from where the guide without it would put them, and the
    where head's gradient is as without (no gradient through the move, none cut from it); it
    needs the decoder that ``propagation_reads_residual`` borrows, SQAIR, and a count >= 0."""
    config = preset("mlp-sqair", hidden=32, z_what_dim=8, init_from=None,
                    propagation_reads_residual=True, discovery_pres_bias=4.0)  # fmt: skip
    images = torch.rand(4, 3, 50, 50)
    traces = {}
    for steps in (0, 2):
        torch.manual_seed(0)
        model, guide = build(config.replace(propagation_aligns_window=steps))
        pyro.set_rng_seed(0)
        trace = pyro.poutine.trace(guide).get_trace(images)
        where = trace.nodes["z_where_prop_1_0"]["fn"].base_dist.base_dist.loc
        where.sum().backward()
        traces[steps] = (trace, where, guide.propagation.where_head.net[-1].bias.grad)
    (_, plain_loc, plain_grad), (_, aligned_loc, aligned_grad) = traces[0], traces[2]
    torch.testing.assert_close(plain_loc[..., :2], aligned_loc[..., :2])
    assert not torch.allclose(plain_loc[..., 2:], aligned_loc[..., 2:])
    torch.testing.assert_close(plain_grad, aligned_grad)
    with pytest.raises(ValueError, match="needs propagation_reads_residual"):
        build(config.replace(propagation_reads_residual=False, propagation_aligns_window=1))
    with pytest.raises(ValueError, match="needs SQAIR"):
        build(preset("mlp-air", propagation_aligns_window=1, init_from=None))
    with pytest.raises(ValueError, match="propagation_aligns_window must be >= 0"):
        config.replace(propagation_aligns_window=-1)


def test_sqair_discovery_reads_the_difference_from_the_propagated_objects(monkeypatch):
    """With ``discovery_reads_difference`` SQAIR's discovery after the first frame starts from
    Alg. 1's canvas of the frame's propagated objects, in the first frame from nothing; the
    mask of ``discovery_masks_propagated`` is another reading, refused beside it."""
    from sqair_pyro.guides.air import DiscoveryRNN
    from sqair_pyro.models.likelihood import draw

    given, forward = [], DiscoveryRNN.forward

    def spy(self, *args, drawn=None, **kwargs):
        given.append(drawn)
        return forward(self, *args, drawn=drawn, **kwargs)

    monkeypatch.setattr(DiscoveryRNN, "forward", spy)
    config = preset("mlp-sqair", hidden=32, z_what_dim=8, init_from=None, discovery_pres_bias=4.0)
    model, guide = build(config)
    pyro.set_rng_seed(0)
    with torch.no_grad():
        trace = pyro.poutine.trace(guide).get_trace(torch.rand(4, 3, 50, 50))
    assert len(given) == 3 and given[0] is None
    for t in (1, 2):
        objects = [
            torch.stack([trace.nodes[f"{kind}_prop_{t}_{i}"]["value"] for i in range(3)], -2)
            for kind in ("z_what", "z_where", "z_pres")
        ]
        assert objects[2].any()  # something was propagated
        expected = draw(model.likelihood.decoder, *objects, (50, 50))
        torch.testing.assert_close(given[t], expected)
    with pytest.raises(ValueError, match="choose one"):
        build(config.replace(discovery_masks_propagated=True))


@pytest.mark.parametrize("on", [False, True])
def test_the_sqair_guide_masks_the_propagated_objects_when_asked(on, monkeypatch):
    """``discovery_masks_propagated`` reaches the guide: after the first frame discovery's
    context is the encoding of the frame without the propagated objects' windows, and its
    summary of them is zero (with particles as an extra batch dim too); only when the option
    is on, never in the warm-up's frames without discovery; AIR refuses it."""
    import sqair_pyro.guides.sqair as sqair_guide
    from sqair_pyro.guides.air import DiscoveryRNN

    masked, seen = [], []
    unexplained, discover = sqair_guide.unexplained, DiscoveryRNN.forward

    def spy_mask(image, objects, size):
        masked.append(unexplained(image, objects, size))
        return masked[-1]

    def spy_discovery(self, image, context, num_free, site, extra=None, found=None, **kwargs):
        seen.append((context, extra))
        return discover(self, image, context, num_free, site, extra, found, **kwargs)

    monkeypatch.setattr(sqair_guide, "unexplained", spy_mask)
    monkeypatch.setattr(DiscoveryRNN, "forward", spy_discovery)
    config = preset(
        "mlp-sqair", hidden=32, z_what_dim=8, init_from=None, discovery_reads_difference=False
    )
    guide = build(config.replace(discovery_masks_propagated=on))[1]
    pyro.set_rng_seed(0)
    with torch.no_grad(), pyro.plate("particles", 2, dim=-2):
        latents = guide(torch.rand(3, 4, 50, 50))
    assert latents["z_pres"].shape == (2, 3, 4, 3, 1)
    assert len(masked) == (3 if on else 0) and len(seen) == 4
    for frame, (context, extra) in zip(masked, seen[1:], strict=False):
        assert frame.shape == (2, 3, 50, 50)
        torch.testing.assert_close(context, guide.image_encoder(frame))
        assert extra.shape == (2, 3, 32) and not extra.any()
    if not on:
        assert any(extra.any() for _, extra in seen[1:])  # Eq. 6's summary
    masked.clear()
    guide(torch.rand(3, 4, 50, 50), discover_after_first_frame=False)
    assert masked == []
    with pytest.raises(ValueError, match="needs SQAIR"):
        build(preset("mlp-air", discovery_masks_propagated=True, init_from=None))


class _OffCentreBlobs(torch.nn.Module):
    """A stand-in decoder: a smooth 28x28 blob whose place in the glimpse z_what's first two
    entries set (in pixels from the glimpse's centre)."""

    def forward(self, z_what: torch.Tensor) -> torch.Tensor:
        yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
        cx, cy = 13.5 + z_what[..., 0, None, None], 13.5 + z_what[..., 1, None, None]
        return torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18)


_off_centre_blobs = _OffCentreBlobs()


def test_centred_glimpses_are_drawn_read_aligned_and_boxed_alike(monkeypatch):
    """``centre_glimpses`` reaches the likelihood and every reading of the drawing in the
    guides (the residual, the difference, the alignment); the canvas then holds each object
    with its centre of mass on its window's centre whatever z_what says, where the paper's
    drawing moves with z_what; the propagated window's alignment finds, from 1 px off, the
    window whose centred drawing is the frame (to 0.01 px); the content boxes of
    :func:`predicted_boxes` are those of the rendered canvas; the VRNN refuses the option."""
    from sqair_pyro.evaluate import predicted_boxes
    from sqair_pyro.nn.modules import Borrowed
    from sqair_pyro.nn.spatial_transformer import (
        centre_of_mass,
        centred,
        place,
        where_to_transform,
    )

    config = preset("mlp-sqair", hidden=32, z_what_dim=8, init_from=None,
                    propagation_reads_residual=True, discovery_reads_difference=True,
                    propagation_aligns_window=6, decoder_glimpse_size=(28, 28))  # fmt: skip
    with pytest.raises(ValueError, match="centre_glimpses needs AIR or SQAIR"):
        build(preset("mlp-vrnn", centre_glimpses=True))
    for name in ("mlp-sqair", "mlp-air"):
        base = config if name == "mlp-sqair" else preset(name, init_from=None)
        model, guide = build(base.replace(centre_glimpses=True))
        assert model.likelihood.centre_glimpses and guide.discovery.centre_glimpses
    model, guide = build(config.replace(centre_glimpses=True))
    assert guide.centre_glimpses
    import sqair_pyro.guides.air as air_guide
    import sqair_pyro.guides.sqair as sqair_guide
    from sqair_pyro.models.likelihood import draw

    readings = []  # the centring of every drawing the guide reads (residual, difference)

    def recorded(decoder, z_what, z_where, z_pres, size, centre=False):
        readings.append(centre)
        return draw(decoder, z_what, z_where, z_pres, size, centre)

    for module in (air_guide, sqair_guide):
        monkeypatch.setattr(module, "draw", recorded)
    pyro.set_rng_seed(0)
    with torch.no_grad():
        guide(torch.rand(4, 3, 50, 50))
    assert len(readings) > 2 and all(readings)
    monkeypatch.undo()
    plain, _ = build(config)
    z_what = torch.zeros(2, 1, 8)
    z_what[0, 0, :2] = torch.tensor([4.0, -3.0])  # drawn 4 px right of and 3 px above centre
    z_where = torch.tensor([[[0.3, -0.2, 0.1, -0.2]], [[0.0, 0.4, -0.3, 0.3]]])
    window = where_to_transform(z_where)
    z_pres = torch.ones(2, 1, 1)
    for m, centred_drawing in ((model, True), (plain, False)):
        m.likelihood.decoder = _off_centre_blobs
        canvas = m.likelihood.render(z_what, z_where, z_pres)
        offset = (
            0 if centred_drawing else window[..., :2] * centre_of_mass(_off_centre_blobs(z_what))
        )
        torch.testing.assert_close(centre_of_mass(canvas), (window[..., 2:] + offset)[:, 0],
                                   atol=1e-3, rtol=0)  # fmt: skip
        latents = {
            "z_what": z_what[:, None],
            "z_where": z_where[:, None],
            "z_pres": z_pres[:, None],
        }
        boxes, _ = predicted_boxes(m, latents, (50, 50), mode="content")
        drawn = canvas > 0.1
        rows, cols = drawn.any(-1).nonzero(), drawn.any(-2).nonzero()
        for b in range(2):
            r, c = rows[rows[:, 0] == b, 1], cols[cols[:, 0] == b, 1]
            expected = torch.stack([c.min(), r.min(), c.max() - c.min() + 1, r.max() - r.min() + 1])
            torch.testing.assert_close(boxes[b, 0, 0], expected.float())
    guide.decoder = Borrowed(_off_centre_blobs)
    drawn_glimpses = _off_centre_blobs(z_what[:, 0])
    frame = place(drawn_glimpses, centred(window[:, 0], drawn_glimpses), (50, 50))
    start = z_where[:, 0] + torch.tensor([0.0, 0.0, 0.04, -0.04])
    aligned = guide.aligned(start, z_what[:, 0], frame)
    torch.testing.assert_close(aligned[:, :2], start[:, :2])
    torch.testing.assert_close(aligned[:, 2:], z_where[:, 0, 2:], atol=4e-4, rtol=0)


@pytest.mark.parametrize("centre", [False, True])
def test_discovery_aligns_each_new_window_on_its_appearance(centre):
    """``discovery_aligns_window``: from a window 1 px off in x and y, the new object's
    window moves (its shift, not its scale) to where the appearance the what head reads there
    draws the frame, drawn as the model draws it (centred or not), to 0.01 px; with no steps
    it stays. In the programs the discovered windows' posterior means move while the where
    head's gradient is as without (no gradient through the move); the option needs AIR or
    SQAIR and a count >= 0."""
    from sqair_pyro.nn.modules import Borrowed
    from sqair_pyro.nn.spatial_transformer import centred, place, where_to_transform

    config = preset("mlp-air", hidden=32, z_what_dim=8, init_from=None, centre_glimpses=centre,
                    decoder_glimpse_size=(28, 28), discovery_aligns_window=6)  # fmt: skip
    _, guide = build(config)
    discovery = guide.discovery
    assert discovery.align_steps == 6 and discovery.aligns_with is not None
    discovery.aligns_with = Borrowed(_off_centre_blobs)
    code = torch.tensor([3.0, -2.0, 0, 0, 0, 0, 0, 0])  # the blob 3 px right, 2 px up
    with torch.no_grad():
        last = discovery.what_head.net[-1]
        last.weight.zero_()
        last.bias[:8] = code
    true = torch.tensor([[0.3, -0.2, 0.1, -0.2], [0.1, 0.2, -0.3, 0.3]])
    template = _off_centre_blobs(code.expand(2, 8))
    window = where_to_transform(true)
    drawing = centred(window, template) if centre else window
    frame = place(template, drawing, (50, 50))
    start = true + torch.tensor([0.0, 0.0, 0.04, -0.04])
    h = torch.zeros(2, 32)
    moved = discovery.aligned(start, h, frame, frame)
    torch.testing.assert_close(moved[:, :2], start[:, :2])
    torch.testing.assert_close(moved[:, 2:], true[:, 2:], atol=4e-4, rtol=0)
    discovery.align_steps = 0
    torch.testing.assert_close(discovery.aligned(start, h, frame, frame), start)

    images = torch.rand(4, 3, 50, 50)
    traces = {}
    for steps in (0, 2):
        torch.manual_seed(0)
        _, g = build(config.replace(discovery_aligns_window=steps, discovery_pres_bias=4.0))
        pyro.set_rng_seed(0)
        trace = pyro.poutine.trace(g).get_trace(images)
        where = trace.nodes["z_where_0"]["fn"].base_dist.base_dist.loc
        where.sum().backward()
        traces[steps] = (where, g.discovery.where_head.net[-1].bias.grad)
    (plain_loc, plain_grad), (aligned_loc, aligned_grad) = traces[0], traces[2]
    torch.testing.assert_close(plain_loc[..., :2], aligned_loc[..., :2])
    assert not torch.allclose(plain_loc[..., 2:], aligned_loc[..., 2:])
    torch.testing.assert_close(plain_grad, aligned_grad)
    with pytest.raises(ValueError, match="needs AIR or SQAIR"):
        build(preset("mlp-vrnn", discovery_aligns_window=1))
    with pytest.raises(ValueError, match="discovery_aligns_window must be >= 0"):
        config.replace(discovery_aligns_window=-1)
