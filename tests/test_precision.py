"""Mixed precision: bfloat16 matrix products, float32 everywhere a density is formed."""

import pyro
import pyro.poutine as poutine
import torch
from conftest import small_config
from pyro.distributions.util import is_validation_enabled
from pyro.poutine.util import site_is_subsample

from sqair_pyro.build import build
from sqair_pyro.data import load_npz
from sqair_pyro.nn.modules import GlimpseDecoderSubpixel
from sqair_pyro.nn.precision import fast_numerics, keep_float32_outputs, matmul_precision
from sqair_pyro.nn.spatial_transformer import glimpse, place
from sqair_pyro.train import make_objective


def _setup(tiny_data, name="mlp-sqair"):
    config = small_config(name, hidden=64, z_what_dim=16)
    model, guide = build(config)
    keep_float32_outputs(model, guide)
    images = torch.from_numpy(load_npz(tiny_data / "test.npz")["images"][:8, :3]).float() / 255
    return config, model, guide, images


def test_every_site_and_density_is_float32(tiny_data):
    _, model, guide, images = _setup(tiny_data)
    with matmul_precision(True):
        guide_trace = poutine.trace(guide).get_trace(images)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(images)
    for trace in (guide_trace, model_trace):
        trace.compute_log_prob()
        sites = [
            s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)
        ]
        assert sites
        for site in sites:
            assert site["value"].dtype == torch.float32, site["name"]
            assert site["log_prob"].dtype == torch.float32, site["name"]


def test_the_spatial_transformer_stays_exact():
    torch.manual_seed(0)
    images, glimpses = torch.rand(6, 50, 50), torch.rand(6, 20, 20)
    z_where = torch.cat([0.2 + 0.5 * torch.rand(6, 2), torch.rand(6, 2) - 0.5], -1)
    with matmul_precision(True):
        cut, drawn = glimpse(images, z_where, (20, 20)), place(glimpses, z_where, (50, 50))
    assert cut.dtype == drawn.dtype == torch.float32
    assert torch.equal(cut, glimpse(images, z_where, (20, 20)))
    assert torch.equal(drawn, place(glimpses, z_where, (50, 50)))


def test_log_weights_of_the_same_latents_match_float32(tiny_data):
    """The same latents (one guide trace replayed) scored with bfloat16 and float32 matrix
    products: every particle's log weight (hundreds of nats) agrees to 0.1 nat."""
    config, model, guide, images = _setup(tiny_data)
    elbo = make_objective(config)
    pyro.set_rng_seed(1)
    _, guide_trace = elbo._traces(model, guide, (images,), {})
    fixed = poutine.replay(guide, trace=guide_trace)

    def log_w(low: bool) -> torch.Tensor:
        with matmul_precision(low), torch.no_grad():
            return elbo.log_weights(model, fixed, images)[0]

    high, low = log_w(False), log_w(True)
    assert low.dtype == torch.float32
    assert (low - high).abs().max() < 0.1, (low - high).abs().max()


def test_the_subpixel_decoder_rounds_little(tiny_data):
    """The trained pedestrian decoder (shipped) under mixed precision: its hidden layers run in
    bfloat16 (the glimpses differ from float32's) and its output stays close: at most 0.05 of
    an intensity, 0.001 on average (the likelihood's sd is 0.3). On a fresh CONV-SQAIR, every
    log weight of the same latents (about a thousand nats here) moves by under 1 nat."""
    from sqair_pyro import pretrained

    _, trained, _ = pretrained.load_pretrained("conv-air-pedestrians")
    decoder = trained.likelihood.decoder
    keep_float32_outputs(decoder)
    z_what = torch.randn(256, 50, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exact = decoder(z_what)
        with matmul_precision(True):
            low = decoder(z_what)
    error = (low - exact).abs()
    assert low.dtype == torch.float32
    assert 0 < error.max() < 0.05 and error.mean() < 1e-3, (error.max(), error.mean())
    config, model, guide, images = _setup(tiny_data, "conv-sqair")
    elbo = make_objective(config)
    pyro.set_rng_seed(1)
    _, guide_trace = elbo._traces(model, guide, (images,), {})
    fixed = poutine.replay(guide, trace=guide_trace)
    with torch.no_grad():
        high = elbo.log_weights(model, fixed, images)[0]
        with matmul_precision(True):
            gap = elbo.log_weights(model, fixed, images)[0] - high
    assert gap.abs().max() < 1.0, gap


def test_mean_gradient_matches_float32(tiny_data):
    """Over 24 seeds on a fixed batch the mean gradient with bfloat16 products is within 0.1
    (relative norm) of float32's and well inside the Monte Carlo noise of one gradient."""
    config, model, guide, images = _setup(tiny_data)
    elbo = make_objective(config)
    params = [*model.parameters(), *guide.parameters()]

    def run(low: bool, seed: int) -> torch.Tensor:
        pyro.set_rng_seed(seed)
        with matmul_precision(low):
            loss = elbo.differentiable_loss(model, guide, images)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        flat = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]
        return torch.cat([g.flatten() for g in flat])

    runs = {low: torch.stack([run(low, seed) for seed in range(24)]) for low in (False, True)}
    mean = {low: runs[low].mean(0) for low in runs}
    gap = (mean[True] - mean[False]).norm() / mean[False].norm()
    single = (runs[False] - mean[False]).norm(dim=1).mean() / mean[False].norm()
    print(f"gap {gap:.4f}, one gradient's error {single:.4f}")
    assert gap < 0.1 and gap < single / 3


def test_log_px_in_mixed_precision_stays_close(tiny_data):
    """``evaluate --mixed-precision``: the same random stream (same seed) estimated with
    bfloat16 products gives log p(x) within 1 nat of float32's (about a thousand nats here; the
    draws themselves move a little with the guide's rounding), on programs that nothing had
    hooked before, and the report and its table say which precision was used."""
    from sqair_pyro.evaluate import evaluate, log_px, markdown_table

    config = small_config("mlp-sqair", hidden=64, z_what_dim=16)
    model, guide = build(config)  # no keep_float32_outputs: log_px must add it
    images = torch.from_numpy(load_npz(tiny_data / "test.npz")["images"][:8, :3]).float() / 255
    estimates = {}
    for low in (False, True):
        pyro.set_rng_seed(3)
        estimates[low] = log_px(
            model, guide, images, num_particles=20, chunk_size=10, mixed_precision=low
        )
    assert estimates[True].dtype == torch.float32
    gap = (estimates[True] - estimates[False]).abs().max()
    assert 0 < gap < 1.0, gap
    reports = {
        low: evaluate(
            model,
            guide,
            config,
            tiny_data / "test.npz",
            num_particles=4,
            num_sequences=2,
            progress=False,
            mixed_precision=low,
        )  # fmt: skip
        for low in (False, True)
    }
    assert reports[True]["mixed_precision"] is True and reports[False]["mixed_precision"] is False
    assert 0 < abs(reports[True]["log_px"] - reports[False]["log_px"]) < 1.0
    assert "bfloat16" in markdown_table([reports[True]], paper=False)
    assert "bfloat16" not in markdown_table([reports[False]], paper=False)


def test_the_subpixel_decoder_in_channels_last_computes_the_same_glimpses():
    """The decoder lays its maps out channels-last (faster bfloat16 convolutions on the CPU);
    in float32 its glimpses and the gradients of z_what match the same layers run on
    contiguous maps to 1e-5."""
    torch.manual_seed(0)
    decoder = GlimpseDecoderSubpixel(8, [32, 200], (5, 5), [8, 8, 8], [1, 2, 2], (20, 20))
    z_what = torch.randn(2, 7, 8, requires_grad=True)
    layouts = []
    hook = decoder.net[0].register_forward_pre_hook(
        lambda _, inputs: layouts.append(inputs[0].is_contiguous(memory_format=torch.channels_last))
    )
    fast = decoder(z_what)
    maps = decoder.fc(z_what).reshape(14, decoder.start_channels, 5, 5)
    reference = decoder.intensities(decoder.net[:-1](maps)).reshape(2, 7, 20, 20)
    hook.remove()
    assert layouts == [True, False]  # what the first convolution saw: the decoder's, then ours
    assert fast.shape == reference.shape
    assert torch.allclose(fast, reference, atol=1e-5)
    (grad_fast,) = torch.autograd.grad(fast.square().sum(), z_what)
    (grad_reference,) = torch.autograd.grad(reference.square().sum(), z_what)
    assert torch.allclose(grad_fast, grad_reference, atol=1e-5, rtol=1e-4)


def test_fast_numerics_flushes_denormals_and_skips_pyro_validation():
    pyro.enable_validation(True)
    torch.set_flush_denormal(False)
    tiny = torch.tensor([1e-39])  # below float32's smallest normal number, 1.18e-38
    assert (tiny * 1.0).item() > 0 and is_validation_enabled()
    fast_numerics()
    assert (tiny * 1.0).item() == 0.0
    assert not is_validation_enabled()
