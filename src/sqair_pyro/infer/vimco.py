"""VIMCO: the importance-weighted ELBO with leave-one-out score-function baselines."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer.elbo import ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from pyro.util import warn_if_nan

from sqair_pyro.nn.precision import float32_densities

__all__ = ["VIMCO_ELBO", "backward_parts"]

#: Name of the plate that holds the particles (the same name Pyro's own ELBOs use).
PARTICLE_PLATE = "num_particles_vectorized"
#: What the guide's parameters learn from: the importance-weighted bound itself, or the
#: average single-particle ELBO of the same particles (PIWAE, Rainforth et al. 2018).
GUIDE_OBJECTIVES = ("iwae", "elbo")


class _Weights(NamedTuple):
    """What :meth:`VIMCO_ELBO._log_weights` computes from one pair of traces."""

    log_w: torch.Tensor  # (K, ...) in the full max_plate_nesting layout
    scale: float  # mini-batch scale of the data plates
    data_dims: list[int]
    log_q_d: torch.Tensor | None  # summed log q of the non-reparameterised guide sites
    model_params: list[torch.Tensor]  # the param sites of each trace (model first), when
    guide_params: list[torch.Tensor]  # scoring


def _trace_params(trace: Any, skip: set[int]) -> list[torch.Tensor]:
    """The unconstrained tensors of a trace's param sites, leaving out those in ``skip``
    (ids), which it then also holds."""
    params = []
    for site in trace.nodes.values():
        if site["type"] == "param":
            value = site["value"].unconstrained()
            if id(value) not in skip and value.requires_grad:
                skip.add(id(value))
                params.append(value)
    return params


class VIMCO_ELBO(ELBO):
    r"""
    The importance-weighted bound of Burda et al. [1] with the VIMCO gradient estimator of
    Mnih and Rezende [2] for non-reparameterised (e.g. discrete) guide sites.

    **Objective.** With :math:`K` particles :math:`z_{1:K} \sim q(z \mid x)` drawn independently,

    .. math::

        l_{kb} = \log p(x_b, z_{kb}) - \log q(z_{kb} \mid x_b), \qquad
        \mathcal{L}_b = \log \frac{1}{K} \sum_{k=1}^K e^{l_{kb}}, \qquad
        \text{loss} = -s \sum_b \mathcal{L}_b ,

    where :math:`b` indexes the *data plates* and :math:`s` is their mini-batch scale.

    **Which dims are data plates.** Every sample site's (masked) log-probability tensor is summed
    over all of its batch dims except the particle dim and the dims of the plates shared by
    *all* sample sites of the model and the guide (the particle plate aside). Those shared plates
    are the data plates: particles are weighted separately for every element of them, so
    :math:`l` has shape ``(K, *data_plate_shape)``. If some site lies outside a plate (e.g. a
    global latent), that plate is not shared, the set of data plates is empty and the weights
    collapse to shape ``(K,)``; that is the correct IWAE bound when a latent couples the data.
    Plates that only some sites lie in (e.g. objects within an image) are summed over.

    **Mini-batches.** If a data plate is subsampled, each site carries the scale
    :math:`s = \prod_{\text{data plates}} \text{size}/\text{subsample\_size}`. That factor is
    divided out of each site's log-probability *inside* the log-sum-exp and multiplied onto
    :math:`\mathcal{L}_b` *outside* it, so the loss is an unbiased estimate of the full-data
    bound :math:`\sum_{b=1}^{N} \mathcal{L}_b`. (Scaling inside the log-sum-exp would compute a
    different bound.) Any remaining scale (``poutine.scale``, nested subsampled plates that are
    not data plates) stays inside, as in Pyro's other ELBOs.

    **Gradient.** Write :math:`\log q^d(z_{kb})` for the summed log-probability of all
    non-reparameterised guide sites of particle :math:`k` and datum :math:`b`. The surrogate

    .. math::

        \mathcal{L}_b + \sum_k \bigl[\mathcal{L}_b - \mathcal{L}_{b,-k}\bigr]_\perp
        \log q^d(z_{kb}),
        \qquad
        \mathcal{L}_{b,-k} = \log \frac{1}{K}\Bigl(\sum_{j \neq k} e^{l_{jb}}
        + \exp\bigl(\tfrac{1}{K-1}\textstyle\sum_{j\neq k} l_{jb}\bigr)\Bigr),

    (:math:`[\cdot]_\perp` = held constant) has as its gradient an unbiased estimate of
    :math:`\nabla\, \mathbb{E}_q[\mathcal{L}_b]`: reparameterised sites differentiate through
    :math:`\mathcal{L}_b` itself, and the baseline :math:`\mathcal{L}_{b,-k}` does not depend
    on :math:`z_{kb}`, so it only reduces variance. With ``control_variate=False`` the learning
    signal is :math:`\mathcal{L}_b` itself (plain score function / REINFORCE with the IWAE
    bound). The score terms are added as zero-valued ``x - x.detach()`` terms, so the value of
    :meth:`differentiable_loss` equals the negative bound. Note that the signal is *not*
    :math:`l_{kb} - \mathcal{L}_{b,-k}` (the choice of the original SQAIR code), which is biased
    for :math:`\nabla \mathbb{E}[\mathcal{L}]`.

    **The guide's own objective** (``guide_objective="elbo"``: PIWAE, Rainforth et al. [3]).
    As :math:`K` grows the IWAE gradient of the guide's parameters :math:`\phi` loses its
    signal-to-noise ratio, and the guide it trains is broad (mass-covering), so one posterior
    sample reconstructs poorly and costs much KL. With this option the model's parameters
    :math:`\theta` still learn from the IWAE gradient above, and :math:`\phi` from the
    average single-particle ELBO of the same :math:`K` particles,

    .. math::

        \nabla_\phi\, \frac{1}{K}\sum_k \Bigl( l_{kb} + \bigl[l_{kb} - \bar l_{b,-k}
        \bigr]_\perp \log q^d(z_{kb}) \Bigr), \qquad
        \bar l_{b,-k} = \frac{1}{K-1}\sum_{j \neq k} l_{jb},

    whose leave-one-out baseline does not depend on :math:`z_{kb}`, so the estimate is
    unbiased for :math:`\nabla_\phi \mathbb{E}_q[l]`. The two gradients need two backward
    passes (:meth:`surrogate_losses`, each restricted to its parameters: the param sites of
    the model's and of the guide's trace; a param in both counts as the model's), so there is
    no single :meth:`differentiable_loss`; :meth:`loss_and_grads` (what ``SVI`` calls) runs
    both.

    Each site's log-probability is ``fn.log_prob(value)`` with the site's ``poutine.mask`` and
    scale applied (what Pyro stores as the masked ``site["log_prob"]``; ``.mask()`` on a
    distribution acts inside ``log_prob``); ``score_parts().score_function`` is not used, as
    ``.mask()`` does not mask it. No Pyro validation is run, so the per-step cost is the traces,
    one reduction per site and a :math:`K \times K` log-sum-exp for the baselines.

    Requirements: a static model/guide structure, vectorised particles and a finite
    ``max_plate_nesting`` (the particles live in a plate at dim ``-(max_plate_nesting + 1)``);
    every guide sample site must appear in the model and every unobserved model site in the
    guide; enumeration is not supported.

    :param int num_particles: number :math:`K` of particles (at least 2 with the control
        variate, which needs the other particles).
    :param int max_plate_nesting: bound on the number of nested plates of the model and guide.
    :param bool vectorize_particles: must be ``True``.
    :param bool control_variate: use the VIMCO leave-one-out baseline (default) or none.
    :param str guide_objective: ``"iwae"`` (default: every parameter learns from the bound)
        or ``"elbo"`` (the guide learns from the average ELBO of the particles: PIWAE).
    :param retain_graph: passed to ``backward`` in :meth:`loss_and_grads`.

    References

    [1] `Importance Weighted Autoencoders`, Yuri Burda, Roger Grosse, Ruslan Salakhutdinov
    (ICLR 2016).

    [2] `Variational Inference for Monte Carlo Objectives`, Andriy Mnih, Danilo J. Rezende
    (ICML 2016).

    [3] `Tighter Variational Bounds are Not Necessarily Better`, Tom Rainforth, Adam R.
    Kosiorek, Tuan Anh Le, Chris J. Maddison, Maximilian Igl, Frank Wood, Yee Whye Teh
    (ICML 2018).
    """

    def __init__(
        self,
        num_particles: int = 2,
        max_plate_nesting: int = 1,
        vectorize_particles: bool = True,
        control_variate: bool = True,
        guide_objective: str = "iwae",
        retain_graph: bool | None = None,
    ) -> None:
        if guide_objective not in GUIDE_OBJECTIVES:
            raise ValueError(
                f"guide_objective must be one of {GUIDE_OBJECTIVES}, got {guide_objective!r}"
            )
        if not vectorize_particles:
            raise ValueError("VIMCO_ELBO requires vectorize_particles=True")
        if isinstance(max_plate_nesting, bool) or not (
            isinstance(max_plate_nesting, int)
            or (isinstance(max_plate_nesting, float) and max_plate_nesting.is_integer())
        ):
            raise ValueError(
                f"VIMCO_ELBO requires a finite integer max_plate_nesting, got {max_plate_nesting!r}"
            )
        if max_plate_nesting < 0:
            raise ValueError(f"max_plate_nesting must be >= 0, got {max_plate_nesting}")
        if int(num_particles) != num_particles or num_particles < 1:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
        if control_variate and num_particles < 2:
            raise ValueError(
                "VIMCO_ELBO with control_variate=True needs num_particles >= 2 "
                "(the baseline of a particle is built from the others)"
            )
        super().__init__(
            num_particles=int(num_particles),
            max_plate_nesting=int(max_plate_nesting),
            vectorize_particles=True,
            retain_graph=retain_graph,
        )
        # The particle plate is always present (even for K = 1), one dim left of the user's plates.
        self.user_max_plate_nesting = int(max_plate_nesting)
        self.max_plate_nesting = self.user_max_plate_nesting + 1
        self.control_variate = bool(control_variate)
        self.guide_objective = guide_objective

    # ------------------------------------------------------------------ traces

    def _vectorized_num_particles(self, fn: Callable) -> Callable:
        return pyro.plate(PARTICLE_PLATE, self.num_particles, dim=-self.max_plate_nesting)(fn)

    def _get_trace(self, model, guide, args, kwargs):
        if isinstance(poutine.unwrap(guide), Messenger):
            raise NotImplementedError("VIMCO_ELBO does not support GuideMessenger guides")
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        return model_trace, guide_trace

    def _traces(self, model, guide, args, kwargs):
        try:
            return self._get_vectorized_trace(model, guide, args, kwargs)
        except ValueError as e:
            if "collide at dim" in str(e):
                raise ValueError(
                    f"{e}\nVIMCO_ELBO puts its particles in a plate at dim "
                    f"-(max_plate_nesting + 1) = {-self.max_plate_nesting}; a plate collides with "
                    f"it. Increase max_plate_nesting (now {self.user_max_plate_nesting}) to the "
                    "number of nested plates in the model and guide."
                ) from e
            raise

    # ----------------------------------------------------------- log weights

    def _check_site(self, name: str, site: dict) -> None:
        if site["infer"].get("enumerate"):
            raise NotImplementedError(
                f"VIMCO_ELBO does not support enumerated sites (site {name!r} has "
                f"infer={{'enumerate': {site['infer']['enumerate']!r}}})"
            )

    def _log_weights(
        self, model, guide, args, kwargs, with_score: bool, terms: dict | None = None
    ) -> _Weights:
        """Per-(particle, data-plate element) log weights in the full ``max_plate_nesting``
        layout (non-data dims kept with size 1), the data-plate scale, the data-plate dims,
        (if ``with_score``) the summed log q of the non-reparameterised guide sites and the
        parameters of each trace. A
        ``terms`` dict receives each site's signed contribution to the log weights, keyed by
        ``(name, kind)``: kind ``"p"`` for model sites, ``"q"`` for reparameterised and
        ``"q_discrete"`` for other guide sites."""
        model_trace, guide_trace = self._traces(model, guide, args, kwargs)
        model_nodes, guide_nodes = model_trace.nodes, guide_trace.nodes

        # Pass 1: collect sites and check them.
        sites: list[tuple[dict, bool]] = []  # (site, is_guide_site)
        for name, site in guide_nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if site["is_observed"]:
                raise ValueError(
                    f"guide site {name!r} is observed; observations belong in the model only"
                )
            model_site = model_nodes.get(name)
            if model_site is None or model_site["type"] != "sample":
                raise ValueError(f"guide sample site {name!r} is not in the model")
            self._check_site(name, site)
            sites.append((site, True))
        for name, site in model_nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if not site["is_observed"] and name not in guide_nodes:
                raise ValueError(
                    f"model site {name!r} is latent but is not sampled by the guide; "
                    "VIMCO_ELBO needs every latent site in the guide"
                )
            self._check_site(name, site)
            sites.append((site, False))

        # The (name, dim) of the vectorised plates shared by all sites: the data plates.
        common: set | None = None
        stack: tuple = ()
        for site, _ in sites:
            frames = {(f.name, f.dim) for f in site["cond_indep_stack"] if f.dim is not None}
            if common is None:
                common, stack = frames, site["cond_indep_stack"]
            else:
                common &= frames

        nest = self.max_plate_nesting
        K = self.num_particles
        data_frames = sorted(
            (f for f in stack if common and (f.name, f.dim) in common and f.name != PARTICLE_PLATE),
            key=lambda f: f.dim,
        )
        scale = 1.0
        for f in data_frames:
            if f.dim <= -nest:
                raise ValueError(
                    f"plate {f.name!r} at dim {f.dim} reaches beyond max_plate_nesting="
                    f"{self.user_max_plate_nesting} (plus the particle plate at dim {-nest}). "
                    "Increase max_plate_nesting."
                )
            if f.full_size is not None and f.full_size != f.size:
                scale *= f.full_size / f.size
        data_dims = [f.dim for f in data_frames]
        keep = set(data_dims)
        keep.add(-nest)
        sum_dims = tuple(d for d in range(-nest, 0) if d not in keep)
        shape = [1] * nest
        shape[0] = K
        for f in data_frames:
            shape[f.dim] = f.size

        # Pass 2: per-site log probs, reduced to the (K, data plates) layout and summed.
        log_w: Any = 0.0
        log_q_d: Any = 0.0
        for site, is_guide in sites:
            with float32_densities(site["value"].device):  # under mixed precision too
                lp = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
            if lp.dim() > nest:
                raise ValueError(
                    f"site {site['name']!r} has log_prob shape {tuple(lp.shape)}, whose batch "
                    f"dims reach beyond max_plate_nesting={self.user_max_plate_nesting} (plus the "
                    "particle plate). Increase max_plate_nesting or declare event dims with "
                    ".to_event()."
                )
            site_scale = site["scale"]
            if scale != 1.0:
                site_scale = site_scale / scale
                if isinstance(site_scale, float) and abs(site_scale - 1.0) < 1e-12:
                    site_scale = 1.0
            lp = scale_and_mask(lp, site_scale, site["mask"])
            dims = tuple(d for d in sum_dims if -d <= lp.dim())
            if dims:
                lp = lp.sum(dims, keepdim=True)
            if terms is not None:
                kind = ("q" if site["fn"].has_rsample else "q_discrete") if is_guide else "p"
                terms[site["name"], kind] = -lp if is_guide else lp
            if is_guide:
                log_w = log_w - lp
                if with_score and not site["fn"].has_rsample:
                    log_q_d = log_q_d + lp
            else:
                log_w = log_w + lp

        if isinstance(log_w, torch.Tensor):
            log_w = log_w.expand(shape)
        else:
            log_w = torch.zeros(shape)
        if not isinstance(log_q_d, torch.Tensor):
            log_q_d = None
        seen: set[int] = set()
        model_params = _trace_params(model_trace, seen) if with_score else []
        guide_params = _trace_params(guide_trace, seen) if with_score else []
        return _Weights(log_w, scale, data_dims, log_q_d, model_params, guide_params)

    def log_weights(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, float]:
        """
        Draws :math:`K` particles and returns their log importance weights
        :math:`l_{kb} = \\log p(x_b, z_{kb}) - \\log q(z_{kb} \\mid x_b)` with shape
        ``(K, *data_plate_shape)`` (data plates in dim order, outermost first) together with the
        mini-batch scale :math:`s` of the data plates (see the class docstring). The log
        weights are differentiable when grad mode is on.
        """
        log_w, scale, data_dims, *_ = self._log_weights(model, guide, args, kwargs, False)
        return log_w.reshape((log_w.size(0),) + tuple(log_w.size(d) for d in data_dims)), scale

    def log_weight_terms(
        self, model, guide, *args, **kwargs
    ) -> tuple[torch.Tensor, dict[tuple[str, str], torch.Tensor]]:
        """The log weights (as :meth:`log_weights`, without the scale) and each site's signed
        term of them, ``(name, kind) -> (K, *data_plate_shape)`` (kinds: ``_log_weights``),
        which add up to them: what the gradient of the bound is made of
        (``benchmarks/gradient_terms.py``)."""
        terms: dict = {}
        log_w, _, data_dims, *_ = self._log_weights(model, guide, args, kwargs, False, terms)
        shape = (log_w.size(0),) + tuple(log_w.size(d) for d in data_dims)
        return log_w.reshape(shape), {
            k: v.expand(log_w.shape).reshape(shape) for k, v in terms.items()
        }

    # ------------------------------------------------------------- estimator

    @staticmethod
    def _leave_one_out(log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For ``K`` particles ``(K, ...)``: the mask ``eye[k, j] = (j == k)`` and the view
        ``others[k, j] = l_j``, both ``(K, K, ...)``."""
        K = log_w.size(0)
        eye = torch.eye(K, dtype=torch.bool, device=log_w.device)
        eye = eye.reshape((K, K) + (1,) * (log_w.dim() - 1))
        return eye, log_w.unsqueeze(0).expand((K,) + log_w.shape)

    @classmethod
    def _others_mean(cls, log_w: torch.Tensor) -> torch.Tensor:
        """``(K, 1, ...)`` for ``K`` particles ``(K, ...)``: :math:`\\bar l_{-k}`, the mean of the
        other particles' log weights (summed with particle k masked out rather than
        subtracted, so a -inf weight gives no nan in the others' means)."""
        eye, others = cls._leave_one_out(log_w)
        return torch.where(eye, 0.0, others).sum(1, keepdim=True) / (log_w.size(0) - 1)

    def _learning_signal(self, log_w: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        """The (constant) learning signal of each particle's non-reparameterised log q,
        ``(K, ...)``: :math:`\\mathcal{L} - \\mathcal{L}_{-k}` (VIMCO) or :math:`\\mathcal{L}`."""
        if not self.control_variate:
            return bound.expand_as(log_w)
        eye, others = self._leave_one_out(log_w)
        # loo[k, j] = l_j for j != k and the geometric-mean stand-in for j == k.
        loo = torch.where(eye, self._others_mean(log_w), others)
        bound_minus_k = torch.logsumexp(loo, dim=1) - math.log(log_w.size(0))
        return bound - bound_minus_k

    def _elbo_signal(self, log_w: torch.Tensor) -> torch.Tensor:
        """The (constant) learning signal of each particle's non-reparameterised log q under
        the guide's ELBO objective, ``(K, ...)``: :math:`(l_k - \\bar l_{-k}) / K` (VIMCO's
        leave-one-out baseline) or :math:`l_k / K`. A particle of weight zero
        (:math:`l_k = -\\infty`) makes its datum's ELBO, and its own signal, infinite."""
        K = log_w.size(0)
        if not self.control_variate:
            return log_w / K
        return (log_w - self._others_mean(log_w)[:, 0]) / K

    def surrogate_losses(
        self, model, guide, *args, **kwargs
    ) -> list[tuple[torch.Tensor, list[torch.Tensor] | None]]:
        """
        The surrogate losses to differentiate, each with the parameters its gradient is for
        (``None``: all of them; pass them as ``backward(inputs=...)``). One pair whose loss is
        :meth:`differentiable_loss` with ``guide_objective="iwae"``; with ``"elbo"`` the
        model's IWAE surrogate for the model's parameters, then the ELBO surrogate for the
        guide's (the first loss's value is the negative bound in both cases). The parameters
        are the tensors of each trace's param sites (``pyro.module`` / ``pyro.param``, as
        ``SVI`` optimises them); a caller that owns the programs' modules may pass its own.
        """
        w = self._log_weights(model, guide, args, kwargs, True)
        log_w, log_q_d, K = w.log_w, w.log_q_d, self.num_particles
        bound = torch.logsumexp(log_w, dim=0) - math.log(K)
        scored = log_q_d is not None and log_q_d.requires_grad
        # The score term also reaches a parameter shared by model and guide (the model's).
        iwae = bound.sum()
        if scored:
            with torch.no_grad():
                signal = self._learning_signal(log_w, bound)
            iwae = iwae + (signal * (log_q_d - log_q_d.detach())).sum()
        if self.guide_objective == "iwae":
            return [(-w.scale * iwae, None)]
        elbo = log_w.mean(0).sum()
        if scored:
            with torch.no_grad():
                signal = self._elbo_signal(log_w)
            elbo = elbo + (signal * (log_q_d - log_q_d.detach())).sum()
        return [(-w.scale * iwae, w.model_params), (-w.scale * elbo, w.guide_params)]

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """
        :returns: a surrogate loss whose value is the negative (scaled) IWAE bound and whose
            gradient is the negative VIMCO gradient estimate.
        :rtype: torch.Tensor
        :raises NotImplementedError: with ``guide_objective="elbo"``, whose model and guide
            learn from different objectives (use :meth:`surrogate_losses`).
        """
        if self.guide_objective != "iwae":
            raise NotImplementedError(
                "with guide_objective='elbo' the model and the guide learn from different "
                "objectives, so there is no single differentiable loss; use loss_and_grads "
                "or surrogate_losses"
            )
        ((loss, _),) = self.surrogate_losses(model, guide, *args, **kwargs)
        return loss

    @torch.no_grad()
    def bounds(self, model, guide, *args, **kwargs) -> tuple[float, float]:
        """
        :returns: the (scaled) IWAE bound :math:`s\\sum_b\\mathcal{L}_b` and the average
            single-particle ELBO :math:`s\\sum_b \\frac{1}{K}\\sum_k l_{kb}` of the same
            particles (below the bound by Jensen's inequality).
        """
        log_w, scale, *_ = self._log_weights(model, guide, args, kwargs, False)
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
        return scale * bound.sum().item(), scale * log_w.mean(0).sum().item()

    def loss(self, model, guide, *args, **kwargs) -> float:
        """
        :returns: an estimate of the negative (scaled) IWAE bound :math:`-s\\sum_b\\mathcal{L}_b`.
        :rtype: float
        """
        loss = -self.bounds(model, guide, *args, **kwargs)[0]
        warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """
        Computes the loss and backpropagates the VIMCO gradient estimate into the parameters.

        :returns: an estimate of the negative (scaled) IWAE bound.
        :rtype: float
        """
        parts = self.surrogate_losses(model, guide, *args, **kwargs)
        backward_parts(parts, retain_graph=self.retain_graph)
        loss = parts[0][0].item()
        warn_if_nan(loss, "loss")
        return loss


def backward_parts(
    parts: list[tuple[torch.Tensor, list[torch.Tensor] | None]],
    divide_by: float = 1.0,
    retain_graph: bool | None = None,
) -> None:
    """Backpropagate each surrogate loss of :meth:`VIMCO_ELBO.surrogate_losses` (divided by
    ``divide_by``) into its own parameters, keeping the graph for the later ones.

    :raises ValueError: for a loss that needs a gradient but names no parameters (programs
        whose parameters are not param sites: pass the modules' parameters instead).
    """
    for i, (loss, params) in enumerate(parts):
        if not loss.requires_grad:
            continue
        if params is not None and not params:
            raise ValueError(
                "a surrogate loss has no parameters to differentiate: with guide_objective="
                "'elbo' the model's and the guide's parameters are their traces' param sites "
                "(register them with pyro.module), or pass the modules' own"
            )
        keep = retain_graph or i + 1 < len(parts)
        (loss / divide_by).backward(inputs=params, retain_graph=keep)
