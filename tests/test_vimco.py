"""Tests of VIMCO_ELBO: unbiasedness against exact expectations, variance, plates, errors, SVI.

Statistical tests draw many independent replicates of the estimator in ONE vectorised call: the
model and guide get an extra outer plate "reps" and every replicate its own copy of the
parameters (a param of shape (R, ...) filled with identical values). Because the log weights are
per (particle, data-plate element), replicate r's estimate depends only on its own parameter
copy, so the gradient w.r.t. copy r is an independent draw of the single-run gradient estimator.
"""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, RenyiELBO
from pyro.optim import Adam

from sqair_pyro.infer import VIMCO_ELBO, LatentWeights, PresenceExploration, annealed_weights
from sqair_pyro.infer.exploration import explored

N_SE = 4.0  # tolerance of the unbiasedness checks, in standard errors (per parameter)


def _grad_samples(elbo, model, guide, *args):
    """Per-replicate gradient samples of the bound (not the loss), shape (R, num_params)."""
    pyro.clear_param_store()
    loss = elbo.differentiable_loss(model, guide, *args)
    loss.backward()
    params = dict(pyro.get_param_store().named_parameters())
    names = sorted(params)
    R = params[names[0]].shape[0]
    return torch.cat([-params[n].grad.reshape(R, -1) for n in names], dim=1), names


def _z_scores(samples, exact, exact_se=None):
    mean = samples.mean(0)
    se2 = samples.var(0) / samples.shape[0]
    if exact_se is not None:
        se2 = se2 + exact_se**2
    return (mean - exact) / se2.sqrt()


class BiasedVIMCO(VIMCO_ELBO):
    """The original TF code's signal l_k - L_{-k} (biased); for comparison only."""

    def _learning_signal(self, log_w, bound):
        vimco = VIMCO_ELBO._learning_signal(self, log_w, bound)  # L - L_{-k}
        return log_w - bound + vimco  # l_k - L_{-k}


def test_leave_one_out_signal_matches_definition():
    """L - L_{-k}, L_{-k} = log((sum_{j!=k} exp l_j + exp(mean_{j!=k} l_j)) / K), per datum."""
    k_particles = 4
    log_w = 10.0 * torch.randn(k_particles, 3)  # large spread: needs the stable computation
    bound = torch.logsumexp(log_w, 0) - math.log(k_particles)
    signal = VIMCO_ELBO(num_particles=k_particles)._learning_signal(log_w, bound)
    for k in range(k_particles):
        others = log_w[[j for j in range(k_particles) if j != k]].double()
        terms = torch.cat([others, others.mean(0, keepdim=True)])
        expected = bound.double() - (torch.logsumexp(terms, 0) - math.log(k_particles))
        torch.testing.assert_close(signal[k].double(), expected, atol=1e-5, rtol=1e-5)
    plain = VIMCO_ELBO(num_particles=k_particles, control_variate=False)
    torch.testing.assert_close(plain._learning_signal(log_w, bound), bound.expand(4, 3))


# --------------------------------------------------------------------------------------------
# Discrete model: two dependent Bernoulli latents per datum, Normal likelihood.

X_DISC = torch.tensor([0.3, 2.1])
THETA0 = torch.tensor([0.2, -0.5, 1.0, 1.5, 1.0])  # a, b0, b1, c1, c2
PHI0 = torch.tensor([[0.3, -0.2, 0.8], [-0.4, 0.5, -0.6]])  # per datum: q1, q2_0, q2_1


def disc_model(x, R):
    th = pyro.param("theta", lambda: THETA0.expand(R, 1, 5).clone())
    with pyro.plate("reps", R, dim=-2), pyro.plate("data", x.shape[-1], dim=-1):
        z1 = pyro.sample("z1", dist.Bernoulli(logits=th[..., 0]))
        z2 = pyro.sample("z2", dist.Bernoulli(logits=th[..., 1] + th[..., 2] * z1))
        pyro.sample("x", dist.Normal(th[..., 3] * z1 + th[..., 4] * z2 - 0.5, 1.0), obs=x)


def disc_guide(x, R):
    ph = pyro.param("phi", lambda: PHI0.expand(R, *PHI0.shape).clone())
    with pyro.plate("reps", R, dim=-2), pyro.plate("data", x.shape[-1], dim=-1):
        z1 = pyro.sample("z1", dist.Bernoulli(logits=ph[..., 0]))
        pyro.sample("z2", dist.Bernoulli(logits=ph[..., 1] + ph[..., 2] * z1))


def exact_disc_grad(K):
    """Gradient of E[sum_b L_b] by enumerating all 4^K joint assignments of the K particles."""
    theta = THETA0.clone().requires_grad_()
    phi = PHI0.clone().requires_grad_()
    v = torch.arange(4.0).unsqueeze(-1)
    z1, z2 = v // 2, v % 2  # (4, 1)
    log_q = dist.Bernoulli(logits=phi[:, 0]).log_prob(z1) + dist.Bernoulli(
        logits=phi[:, 1] + phi[:, 2] * z1
    ).log_prob(z2)
    log_p = (
        dist.Bernoulli(logits=theta[0]).log_prob(z1)
        + dist.Bernoulli(logits=theta[1] + theta[2] * z1).log_prob(z2)
        + dist.Normal(theta[3] * z1 + theta[4] * z2 - 0.5, 1.0).log_prob(X_DISC)
    )
    log_w = log_p - log_q  # (4, B)
    configs = torch.tensor(list(itertools.product(range(4), repeat=K)))  # (4^K, K)
    prob = log_q[configs].sum(1).exp()  # (4^K, B)
    bound = torch.logsumexp(log_w[configs], dim=1) - math.log(K)  # (4^K, B)
    expected = (prob * bound).sum()
    expected.backward()
    # same order as _grad_samples: sorted names "phi", "theta"
    return torch.cat([phi.grad.reshape(-1), theta.grad.reshape(-1)])


R_DISC = 40000
K = 3


@pytest.mark.parametrize("control_variate", [True, False], ids=["vimco", "reinforce"])
def test_discrete_gradient_unbiased(control_variate):
    exact = exact_disc_grad(K)
    elbo = VIMCO_ELBO(num_particles=K, max_plate_nesting=2, control_variate=control_variate)
    samples, names = _grad_samples(elbo, disc_model, disc_guide, X_DISC, R_DISC)
    assert names == ["phi", "theta"]
    z = _z_scores(samples, exact)
    z_phi, z_all = z[:6].abs().max().item(), z.abs().max().item()
    print(f"control_variate={control_variate}: max |z| phi {z_phi:.2f}, all {z_all:.2f}")
    assert z.abs().max() < N_SE, (z, samples.mean(0), exact)
    # the discrete guide parameters really do get a gradient
    assert samples[:, :6].abs().mean(0).min() > 1e-3


def test_biased_signal_is_detected():
    """The same test rejects the (l_k - L_{-k}) signal: it is biased for grad E[L]."""
    exact = exact_disc_grad(K)
    elbo = BiasedVIMCO(num_particles=K, max_plate_nesting=2)
    samples, _ = _grad_samples(elbo, disc_model, disc_guide, X_DISC, R_DISC)
    z = _z_scores(samples, exact)
    print(f"biased signal: max |z| = {z.abs().max():.1f}")
    assert z.abs().max() > 3 * N_SE


def test_vimco_reduces_variance():
    """Gradient variance (trace of the covariance) for the discrete guide params phi."""
    vimco = VIMCO_ELBO(num_particles=K, max_plate_nesting=2, control_variate=True)
    plain = VIMCO_ELBO(num_particles=K, max_plate_nesting=2, control_variate=False)
    s_vimco, _ = _grad_samples(vimco, disc_model, disc_guide, X_DISC, R_DISC)
    s_plain, _ = _grad_samples(plain, disc_model, disc_guide, X_DISC, R_DISC)
    var_vimco = s_vimco[:, :6].var(0)
    var_plain = s_plain[:, :6].var(0)
    ratio = (var_plain.sum() / var_vimco.sum()).item()
    print(f"variance ratio plain/VIMCO (sum over phi) = {ratio:.2f}")
    print(f"per-parameter ratios = {(var_plain / var_vimco).tolist()}")
    assert ratio > 2.0
    assert (var_plain > var_vimco).all()


# --------------------------------------------------------------------------------------------
# Mixed model: z ~ Bernoulli (score function), y ~ Normal (reparameterised).

X_MIX = torch.tensor([-0.4, 1.7])
THETA_MIX = torch.tensor([0.3, -1.0, 1.5])  # prior logit of z, m0, m1
PHI_MIX = torch.tensor([[0.2, -0.5, 0.9, -0.3], [-0.1, 0.4, 1.2, 0.1]])  # logit, mu0, mu1, log s
SIGMA_X = 0.7


def mix_model(x, R):
    th = pyro.param("theta", lambda: THETA_MIX.expand(R, 1, 3).clone())
    with pyro.plate("reps", R, dim=-2), pyro.plate("data", x.shape[-1], dim=-1):
        z = pyro.sample("z", dist.Bernoulli(logits=th[..., 0]))
        y = pyro.sample("y", dist.Normal(th[..., 1] + (th[..., 2] - th[..., 1]) * z, 1.0))
        pyro.sample("x", dist.Normal(y, SIGMA_X), obs=x)


def mix_guide(x, R):
    ph = pyro.param("phi", lambda: PHI_MIX.expand(R, *PHI_MIX.shape).clone())
    with pyro.plate("reps", R, dim=-2), pyro.plate("data", x.shape[-1], dim=-1):
        z = pyro.sample("z", dist.Bernoulli(logits=ph[..., 0]))
        loc = ph[..., 1] + (ph[..., 2] - ph[..., 1]) * z
        pyro.sample("y", dist.Normal(loc, ph[..., 3].exp()))


def reference_mix_grad(K, M, beta=1.0):
    """Exact expectation over the 2^K discrete assignments of the particles, Monte Carlo over
    the reparameterised part with common random numbers eps (M, K, B). Each of the M draws
    gets its own parameter copy, so the per-draw gradients give the reference's own error.
    ``beta`` weights the prior and posterior terms of y (a KL weight)."""
    theta = THETA_MIX.expand(M, 3).clone().requires_grad_()
    phi = PHI_MIX.expand(M, *PHI_MIX.shape).clone().requires_grad_()
    configs = torch.tensor(list(itertools.product(range(2), repeat=K)), dtype=torch.float)
    z = configs[:, None, :, None]  # (C, 1, K, 1)
    eps = torch.randn(M, K, X_MIX.shape[0])  # (M, K, B)
    th = theta[:, None, :]  # (M, 1, 3) -> broadcast over K and B
    ph = phi[:, None, :, :]  # (M, 1, B, 4)
    q_loc = ph[..., 1] + (ph[..., 2] - ph[..., 1]) * z  # (C, M, K, B)
    q_scale = ph[..., 3].exp()
    y = q_loc + q_scale * eps
    log_qz = dist.Bernoulli(logits=ph[..., 0]).log_prob(z)
    log_q = log_qz + beta * dist.Normal(q_loc, q_scale).log_prob(y)
    log_p = (
        dist.Bernoulli(logits=th[..., 0:1]).log_prob(z)
        + beta * dist.Normal(th[..., 1:2] + (th[..., 2:3] - th[..., 1:2]) * z, 1.0).log_prob(y)
        + dist.Normal(y, SIGMA_X).log_prob(X_MIX)
    )
    bound = torch.logsumexp(log_p - log_q, dim=2) - math.log(K)  # (C, M, B)
    prob = log_qz.sum(2).exp()  # (C, M, B)
    (prob * bound).sum().backward()
    samples = torch.cat([phi.grad.reshape(M, -1), theta.grad.reshape(M, -1)], dim=1)
    return samples.mean(0), samples.std(0) / math.sqrt(M)


def test_mixed_gradient_unbiased():
    ref, ref_se = reference_mix_grad(K, M=40000)
    elbo = VIMCO_ELBO(num_particles=K, max_plate_nesting=2)
    samples, names = _grad_samples(elbo, mix_model, mix_guide, X_MIX, 40000)
    assert names == ["phi", "theta"]
    z = _z_scores(samples, ref, ref_se)
    print(f"mixed model: max |z| = {z.abs().max():.2f}")
    assert z.abs().max() < N_SE, (z, samples.mean(0), ref)


# --------------------------------------------------------------------------------------------
# KL weights of chosen latents (sqair_pyro.infer.latent_weights).


def test_latent_weights_scale_both_terms_of_the_named_latents():
    """Under ``LatentWeights({"y": 0.3})`` a particle's log weight is
    ``log p(x | ...) + log p(z) - log q(z) + 0.3 [log p(y | z) - log q(y | z)]``, exactly, for
    the same draws; the discrete z and the observed x are untouched."""
    elbo = VIMCO_ELBO(num_particles=4, max_plate_nesting=2)
    pyro.clear_param_store()
    pyro.set_rng_seed(3)
    _, terms = elbo.log_weight_terms(mix_model, mix_guide, X_MIX, 2)
    pyro.set_rng_seed(3)
    with LatentWeights({"y": 0.3}):
        weighted, _ = elbo.log_weights(mix_model, mix_guide, X_MIX, 2)
    expected = (
        terms["x", "p"]
        + terms["z", "p"]
        + terms["z", "q_discrete"]
        + 0.3 * (terms["y", "p"] + terms["y", "q"])
    )
    torch.testing.assert_close(weighted, expected.reshape(weighted.shape), rtol=1e-6, atol=1e-5)
    assert (terms["y", "p"] + terms["y", "q"]).abs().max() > 0.1  # the weight matters here


def test_weighted_gradient_unbiased_for_the_weighted_objective():
    """VIMCO under a KL weight on the reparameterised y estimates the gradient of
    ``E[log mean_k exp(l_k)]`` with the weighted log weights, score-function term included."""
    ref, ref_se = reference_mix_grad(K, M=20000, beta=0.4)
    elbo = VIMCO_ELBO(num_particles=K, max_plate_nesting=2)
    with LatentWeights({"y": 0.4}):
        samples, names = _grad_samples(elbo, mix_model, mix_guide, X_MIX, 20000)
    assert names == ["phi", "theta"]
    z = _z_scores(samples, ref, ref_se)
    unweighted, unweighted_se = reference_mix_grad(K, M=20000)
    apart = (ref - unweighted).abs() / (ref_se**2 + unweighted_se**2).sqrt()
    print(f"weighted: max |z| = {z.abs().max():.2f}; weighting moves it by {apart.max():.1f} SE")
    assert z.abs().max() < N_SE, (z, samples.mean(0), ref)
    assert apart.max() > 3 * N_SE  # the check could tell the weighted gradient from the plain


def test_latent_weights_refuse_discrete_and_non_positive():
    elbo = VIMCO_ELBO(num_particles=2, max_plate_nesting=2)
    with pytest.raises(ValueError, match="not reparameterised"), LatentWeights({"z": 0.5}):
        elbo.log_weights(mix_model, mix_guide, X_MIX, 1)
    for weight in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="must be positive"):
            LatentWeights({"y": weight})


def test_annealed_weights_rise_linearly_to_one():
    assert annealed_weights({"a": 0.2}, 0, 100) == {"a": pytest.approx(0.2)}
    assert annealed_weights({"a": 0.2}, 50, 100) == {"a": pytest.approx(0.6)}
    assert annealed_weights({"a": 0.2, "b": 2.0}, 100, 100) == {"a": 1.0, "b": 1.0}
    assert annealed_weights({"a": 0.2}, 500, 100) == {"a": 1.0}
    assert annealed_weights({"a": 0.2}, 500, 0) == {"a": 0.2}  # constant


# --------------------------------------------------------------------------------------------
# Why it exists: Pyro's IWAE gives discrete guide params no gradient.

X_COIN = torch.tensor([3.0, 0.0, 1.5])


def coin_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Bernoulli(0.5))
        pyro.sample("x", dist.Normal(3.0 * z, 1.0), obs=x)


def coin_guide(x):
    logit = pyro.param("q_logit", lambda: torch.zeros(x.shape[0]))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Bernoulli(logits=logit))


def _q_logit_grad(elbo):
    pyro.clear_param_store()
    elbo.loss_and_grads(coin_model, coin_guide, X_COIN)
    return dict(pyro.get_param_store().named_parameters())["q_logit"].grad


def test_renyi_zero_gradient_vimco_learns():
    g_renyi = _q_logit_grad(RenyiELBO(alpha=0, num_particles=5, vectorize_particles=True))
    assert g_renyi is None or (g_renyi == 0).all()
    g_vimco = _q_logit_grad(VIMCO_ELBO(num_particles=5, max_plate_nesting=1))
    assert g_vimco is not None and (g_vimco != 0).all()

    pyro.clear_param_store()
    svi = SVI(coin_model, coin_guide, Adam({"lr": 0.05}), loss=VIMCO_ELBO(num_particles=5))
    for _ in range(600):
        svi.step(X_COIN)
    q = torch.sigmoid(pyro.param("q_logit")).detach()
    posterior = torch.sigmoid(3.0 * X_COIN - 4.5)  # exact p(z = 1 | x): 0.989, 0.011, 0.5
    print(f"q = {q.tolist()}, posterior = {posterior.tolist()}")
    # started at 0.5: the two clear-cut data move most of the way (SGD noise remains at lr 0.05)
    assert q[0] > 0.9 and q[1] < 0.12
    assert abs(q[2] - 0.5) < 0.3


# --------------------------------------------------------------------------------------------
# Per-datum weights, data plates, global latents.


def gauss_local_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x)


def gauss_local_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(0.2 * x, 1.0))


def test_per_datum_weights_shape_and_value():
    x = torch.tensor([-2.0, 0.5, 3.0])
    elbo = VIMCO_ELBO(num_particles=7, max_plate_nesting=1)
    pyro.set_rng_seed(1)
    log_w, scale = elbo.log_weights(gauss_local_model, gauss_local_guide, x)
    assert log_w.shape == (7, 3) and scale == 1.0
    pyro.set_rng_seed(1)
    loss = elbo.loss(gauss_local_model, gauss_local_guide, x)
    per_datum = -(torch.logsumexp(log_w, 0) - math.log(7)).sum().item()
    collapsed = -(torch.logsumexp(log_w.sum(1), 0) - math.log(7)).item()
    assert loss == pytest.approx(per_datum, rel=1e-6)
    assert abs(loss - collapsed) > 0.5  # the two differ a lot here, so the check is sharp


def test_global_latent_collapses():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Normal(0.3, 0.5))

    x = torch.tensor([-1.0, 0.5, 2.0])
    elbo = VIMCO_ELBO(num_particles=6, max_plate_nesting=1)
    pyro.set_rng_seed(2)
    log_w, scale = elbo.log_weights(model, guide, x)
    assert log_w.shape == (6,) and scale == 1.0
    pyro.set_rng_seed(2)
    tr = pyro.poutine.trace(elbo._vectorized_num_particles(guide)).get_trace(x)
    mu = tr.nodes["mu"]["value"].reshape(6, 1)
    expected = (
        dist.Normal(0.0, 1.0).log_prob(mu).squeeze(1)
        + dist.Normal(mu, 1.0).log_prob(x).sum(1)
        - dist.Normal(0.3, 0.5).log_prob(mu).squeeze(1)
    )
    torch.testing.assert_close(log_w, expected)


def test_nested_plate_is_summed_and_data_plate_kept():
    """Objects plate (only latents) inside data plate (with the observation): weights (K, B)."""

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            with pyro.plate("objects", 4, dim=-1):
                z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0), obs=x.unsqueeze(-1))

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-2), pyro.plate("objects", 4, dim=-1):
            pyro.sample("z", dist.Normal(0.1, 1.0))

    x = torch.tensor([0.0, 1.0, 5.0])
    elbo = VIMCO_ELBO(num_particles=5, max_plate_nesting=2)
    pyro.set_rng_seed(3)
    log_w, _ = elbo.log_weights(model, guide, x)
    assert log_w.shape == (5, 3)
    pyro.set_rng_seed(3)
    z = pyro.poutine.trace(elbo._vectorized_num_particles(guide)).get_trace(x).nodes["z"]["value"]
    assert z.shape == (5, 3, 4)
    expected = (
        dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        - dist.Normal(0.1, 1.0).log_prob(z).sum(-1)
        + dist.Normal(z.sum(-1), 1.0).log_prob(x)
    )
    torch.testing.assert_close(log_w, expected)


# --------------------------------------------------------------------------------------------
# Mini-batch scaling outside the log-sum-exp.


def sub_model(x, idx, size):
    with pyro.plate("data", size, subsample=idx):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 0.3), obs=x[idx])


def sub_guide(x, idx, size):
    loc = pyro.param("loc", lambda: torch.zeros(x.shape[0]))
    with pyro.plate("data", size, subsample=idx):
        pyro.sample("z", dist.Normal(loc[idx], 1.5))


def test_subsample_scale_outside_logsumexp():
    x = torch.tensor([2.0, -1.0, 0.5, 3.0, 1.0, -2.0])
    idx = torch.tensor([0, 3, 5])
    elbo = VIMCO_ELBO(num_particles=4, max_plate_nesting=1)
    grads = {}
    for size in (6, 3):  # subsampled (scale 2) and the same three points as a full plate
        pyro.clear_param_store()
        pyro.set_rng_seed(4)
        loss = elbo.differentiable_loss(sub_model, sub_guide, x, idx, size)
        loss.backward()
        grads[size] = (loss.item(), pyro.param("loc").grad.clone())
        pyro.set_rng_seed(4)
        assert elbo.loss(sub_model, sub_guide, x, idx, size) == pytest.approx(loss.item())
    assert grads[6][0] == pytest.approx(2.0 * grads[3][0], rel=1e-6)
    torch.testing.assert_close(grads[6][1], 2.0 * grads[3][1])

    pyro.set_rng_seed(4)
    log_w, scale = elbo.log_weights(sub_model, sub_guide, x, idx, 6)
    assert scale == 2.0 and log_w.shape == (4, 3)
    outside = -scale * (torch.logsumexp(log_w, 0) - math.log(4)).sum().item()
    inside = -(torch.logsumexp(scale * log_w, 0) - math.log(4)).sum().item()
    assert grads[6][0] == pytest.approx(outside, rel=1e-6)
    assert abs(outside - inside) > 1.0


# --------------------------------------------------------------------------------------------
# Errors.


def test_constructor_errors():
    with pytest.raises(ValueError, match="vectorize_particles"):
        VIMCO_ELBO(num_particles=3, vectorize_particles=False)
    with pytest.raises(ValueError, match="max_plate_nesting"):
        VIMCO_ELBO(num_particles=3, max_plate_nesting=float("inf"))
    with pytest.raises(ValueError, match="num_particles >= 2"):
        VIMCO_ELBO(num_particles=1)
    VIMCO_ELBO(num_particles=1, control_variate=False)  # plain IWAE/REINFORCE with K=1 is fine


def test_site_errors():
    x = torch.tensor([0.0, 1.0])
    elbo = VIMCO_ELBO(num_particles=3, max_plate_nesting=1)

    def guide_extra(x):
        with pyro.plate("data", 2):
            pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("w", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="'w' is not in the model"):
        elbo.loss(gauss_local_model, guide_extra, x)

    def guide_observed(x):
        with pyro.plate("data", 2):
            pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    with pytest.raises(ValueError, match="observed"):
        elbo.loss(gauss_local_model, guide_observed, x)

    def guide_missing(x):
        pass

    with pytest.raises(ValueError, match="not sampled by the guide"):
        elbo.loss(gauss_local_model, guide_missing, x)

    def model_deep(x):
        with pyro.plate("a", 2), pyro.plate("b", 3):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=torch.zeros(3, 2))

    def guide_deep(x):
        with pyro.plate("a", 2), pyro.plate("b", 3):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="max_plate_nesting=1"):
        elbo.loss(model_deep, guide_deep, x)

    def model_dim2(x):
        with pyro.plate("data", 2, dim=-2):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="max_plate_nesting"):
        elbo.loss(model_dim2, model_dim2, x)

    def guide_enum(x):
        with pyro.plate("data", 2):
            pyro.sample("z", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})

    def model_bern(x):
        with pyro.plate("data", 2):
            pyro.sample("z", dist.Bernoulli(0.5))

    with pytest.raises(NotImplementedError, match="enumerat"):
        elbo.loss(model_bern, guide_enum, x)


# --------------------------------------------------------------------------------------------
# Integration.


def test_svi_and_torch_optimizer():
    x = torch.tensor([0.0, 1.0, 2.0])
    elbo = VIMCO_ELBO(num_particles=5, max_plate_nesting=1)
    svi = SVI(coin_model, coin_guide, Adam({"lr": 0.1}), loss=elbo)
    before = pyro.param("q_logit", torch.zeros(3)).detach().clone()
    loss = svi.step(x)
    assert isinstance(loss, float) and math.isfinite(loss)
    assert not torch.equal(pyro.param("q_logit").detach(), before)
    assert math.isfinite(svi.evaluate_loss(x))

    # the surrogate's value is the negative bound; loss, loss_and_grads agree given the seed
    pyro.set_rng_seed(5)
    surrogate = elbo.differentiable_loss(coin_model, coin_guide, x)
    pyro.set_rng_seed(5)
    assert elbo.loss(coin_model, coin_guide, x) == pytest.approx(surrogate.item(), rel=1e-6)
    pyro.set_rng_seed(5)
    assert elbo.loss_and_grads(coin_model, coin_guide, x) == pytest.approx(surrogate.item())

    # plain torch optimiser on the unconstrained params
    pyro.clear_param_store()
    elbo.differentiable_loss(coin_model, coin_guide, x)  # create params
    params = [p for _, p in pyro.get_param_store().named_parameters()]
    optim = torch.optim.Adam(params, lr=0.1)
    for _ in range(5):
        optim.zero_grad()
        loss = elbo.differentiable_loss(coin_model, coin_guide, x)
        loss.backward()
        optim.step()
    assert torch.isfinite(loss)
    assert (pyro.param("q_logit").detach() != 0).all()

    # ELBOModule interface
    module_loss = elbo(torch.nn.Module(), torch.nn.Module())
    assert isinstance(module_loss, torch.nn.Module)


def test_single_particle_reinforce_shapes():
    elbo = VIMCO_ELBO(num_particles=1, max_plate_nesting=1, control_variate=False)
    log_w, _ = elbo.log_weights(coin_model, coin_guide, X_COIN)
    assert log_w.shape == (1, 3)
    loss = elbo.differentiable_loss(coin_model, coin_guide, X_COIN)
    loss.backward()
    assert (pyro.param("q_logit").grad != 0).all()


# --------------------------------------------------------------------------------------------
# The guide's own objective (PIWAE): the model learns from the IWAE bound, the guide from the
# average ELBO of the same particles.


def _piwae_grad_samples(elbo, model, guide, *args):
    """As _grad_samples, through loss_and_grads (two backward passes)."""
    pyro.clear_param_store()
    elbo.loss_and_grads(model, guide, *args)
    params = dict(pyro.get_param_store().named_parameters())
    names = sorted(params)
    R = params[names[0]].shape[0]
    return torch.cat([-params[n].grad.reshape(R, -1) for n in names], dim=1), names


@pytest.mark.parametrize("control_variate", [True, False], ids=["loo", "plain"])
def test_piwae_gradient_unbiased(control_variate):
    """The model's parameters get the gradient of E[IWAE bound], the guide's that of E[ELBO]
    (the K=1 bound), each against its exact reference (enumerated discrete part, Monte Carlo
    continuous part with its own error); 4 standard errors per parameter."""
    torch.manual_seed(0)
    iwae_ref, iwae_se = reference_mix_grad(K, M=40000)
    elbo_ref, elbo_se = reference_mix_grad(1, M=40000)
    n_phi = PHI_MIX.numel()
    ref = torch.cat([elbo_ref[:n_phi], iwae_ref[n_phi:]])
    ref_se = torch.cat([elbo_se[:n_phi], iwae_se[n_phi:]])
    elbo = VIMCO_ELBO(
        num_particles=K, max_plate_nesting=2, control_variate=control_variate,
        guide_objective="elbo",
    )  # fmt: skip
    samples, names = _piwae_grad_samples(elbo, mix_model, mix_guide, X_MIX, 40000)
    assert names == ["phi", "theta"]
    z = _z_scores(samples, ref, ref_se)
    print(f"PIWAE ({control_variate=}): max |z| = {z.abs().max():.2f}")
    assert z.abs().max() < N_SE, (z, samples.mean(0), ref)
    # and the guide's gradient is not the IWAE one (the test can tell them apart)
    z_iwae = _z_scores(samples[:, :n_phi], iwae_ref[:n_phi], iwae_se[:n_phi])
    assert z_iwae.abs().max() > 3 * N_SE


def test_piwae_has_no_single_loss_and_keeps_the_bound_value():
    pyro.clear_param_store()
    torch.manual_seed(1)
    elbo = VIMCO_ELBO(num_particles=K, max_plate_nesting=2, guide_objective="elbo")
    with pytest.raises(NotImplementedError, match="surrogate_losses"):
        elbo.differentiable_loss(mix_model, mix_guide, X_MIX, 3)
    (model_loss, theta), (_, phi) = elbo.surrogate_losses(mix_model, mix_guide, X_MIX, 3)
    store = pyro.get_param_store()
    assert [t is store["theta"] for t in theta] == [True]
    assert [t is store["phi"] for t in phi] == [True]
    torch.manual_seed(1)
    pyro.clear_param_store()
    iwae = VIMCO_ELBO(num_particles=K, max_plate_nesting=2)
    torch.testing.assert_close(model_loss, iwae.differentiable_loss(mix_model, mix_guide, X_MIX, 3))
    with pytest.raises(ValueError, match="guide_objective"):
        VIMCO_ELBO(num_particles=K, guide_objective="wake-sleep")
    # Parameters that are no param sites cannot be told apart: one clear error, not silence.
    loose = torch.zeros(1, requires_grad=True)

    def loose_model(x):
        with pyro.plate("data", x.shape[-1]):
            z = pyro.sample("z", dist.Normal(loose, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def loose_guide(x):
        with pyro.plate("data", x.shape[-1]):
            pyro.sample("z", dist.Normal(loose, 1.0))

    with pytest.raises(ValueError, match="no parameters to differentiate"):
        elbo.loss_and_grads(loose_model, loose_guide, X_MIX)


# --------------------------------------------------------------------------------------------
# Exploring presence decisions (sqair_pyro.infer.exploration).


def test_explored_moves_probabilities_inward_and_keeps_exact_zeros():
    """``eps + (1 - 2 eps) p`` for ``p > 0`` through ``to_event`` and ``mask``; 0 stays 0."""
    p = torch.tensor([[0.0], [1e-6], [0.5], [1.0]])
    mask = torch.tensor([True, True, False, True])
    fn = explored(dist.Bernoulli(p).to_event(1).mask(mask), 0.1)
    assert fn.event_shape == (1,) and fn.batch_shape == (4,)
    inner = fn.base_dist.base_dist
    torch.testing.assert_close(inner.probs, torch.tensor([[0.0], [0.1 + 0.8e-6], [0.5], [0.9]]))
    assert fn.log_prob(torch.ones(4, 1))[2] == 0  # the mask is kept
    with pytest.raises(TypeError, match="needs a Bernoulli"):
        explored(dist.Normal(0.0, 1.0), 0.1)
    for eps in (0.5, -0.1, math.nan):
        with pytest.raises(ValueError, match="must be in"):
            PresenceExploration({"z_pres": eps})
    with pytest.raises(ValueError, match="must be keyed by presence sites"):
        PresenceExploration({"z_where": 0.1})


def test_presence_exploration_draws_the_rare_decision_at_eps():
    """A guide that almost never draws z = 1 (p = 1e-4) draws it at rate ``eps`` under the
    handler (20,000 draws, 4 standard errors), scores each draw under the explored ``q'``,
    and leaves sites of other names alone."""
    eps, n = 0.05, 20000

    def guide():
        with pyro.plate("n", n):
            pyro.sample("z_pres_disc_1_0", dist.Bernoulli(torch.tensor(1e-4)))
            pyro.sample("z_pres_prop_1_0", dist.Bernoulli(torch.tensor(1e-4)))

    pyro.set_rng_seed(0)
    trace = pyro.poutine.trace(PresenceExploration({"z_pres_disc": eps})(guide)).get_trace()
    explored_site, other = trace.nodes["z_pres_disc_1_0"], trace.nodes["z_pres_prop_1_0"]
    rate = explored_site["value"].mean().item()
    assert abs(rate - eps) < 4 * math.sqrt(eps * (1 - eps) / n), rate
    assert other["value"].sum() < 10
    expected = math.log(eps + (1 - 2 * eps) * 1e-4)
    assert explored_site["fn"].log_prob(torch.tensor(1.0))[0].item() == pytest.approx(expected)
