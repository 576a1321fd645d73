"""Build a model and its guide from a :class:`~sqair_pyro.config.Config`."""

from __future__ import annotations

from torch import nn

from sqair_pyro.config import Config
from sqair_pyro.guides.air import AIRGuide, DiscoveryRNN
from sqair_pyro.guides.sqair import PropagationRNNs, SQAIRGuide
from sqair_pyro.models.air import AIRModel
from sqair_pyro.models.likelihood import AdditiveSTLikelihood
from sqair_pyro.models.priors import (
    CategoricalDiscoveryPrior,
    DiscoveryPrior,
    GeometricDiscoveryPrior,
    PropagationPrior,
    WhatWherePrior,
)
from sqair_pyro.models.sqair import SQAIRModel
from sqair_pyro.nn.modules import MLP, GlimpseDecoderMLP, GlimpseEncoderMLP, ImageEncoderMLP


def discovery_prior(config: Config) -> DiscoveryPrior:
    """The discovery prior named by ``config.discovery_prior``."""
    if config.discovery_prior == "categorical":
        return CategoricalDiscoveryPrior(config.max_objects, init_rho=config.categorical_init_rho)
    if config.discovery_prior == "geometric":
        return GeometricDiscoveryPrior(config.max_objects, config.geometric_rho)
    raise ValueError(f"unknown discovery prior {config.discovery_prior!r}")


def build(config: Config) -> tuple[nn.Module, nn.Module]:
    """``(model, guide)`` as nn.Modules whose ``forward`` are the Pyro programs."""
    if config.encoder != "mlp":
        raise NotImplementedError(f"encoder {config.encoder!r} is not built yet")
    hidden = config.hidden
    what_where = WhatWherePrior(
        config.z_what_dim, config.where_scale_logit, config.where_scale_sd, config.where_shift_sd
    )
    decoder = GlimpseDecoderMLP(config.z_what_dim, [hidden] * 3, config.glimpse_size)
    likelihood = AdditiveSTLikelihood(decoder, config.image_size, config.obs_sd)
    if config.model == "air":
        model = AIRModel(config.max_objects, discovery_prior(config), what_where, likelihood)
        image_encoder = ImageEncoderMLP(config.image_size, [hidden, hidden])
        discovery = DiscoveryRNN(
            glimpse_encoder=GlimpseEncoderMLP(config.glimpse_size, [hidden, hidden]),
            input_dim=image_encoder.out_dim,
            max_objects=config.max_objects,
            z_what_dim=config.z_what_dim,
            hidden=hidden,
            glimpse_size=config.glimpse_size,
            where_init=what_where.where_loc,
            what_scale_offset=config.what_scale_offset,
            pres_bias=config.discovery_pres_bias,
        )
        if config.objective == "tracegraph":
            discovery.baseline = baseline_network(config)
        return model, AIRGuide(image_encoder, discovery)
    if config.model != "sqair":
        raise ValueError(f"unknown model {config.model!r}; choose 'air' or 'sqair'")
    model = SQAIRModel(
        config.max_objects,
        discovery_prior(config),
        what_where,
        PropagationPrior(config.z_what_dim, hidden, survive_bias=config.survive_bias),
        likelihood,
    )
    image_encoder = ImageEncoderMLP(config.image_size, [hidden, hidden])
    glimpse_encoder = GlimpseEncoderMLP(config.glimpse_size, [hidden, hidden])
    propagation = PropagationRNNs(
        glimpse_encoder,
        image_encoder.out_dim,
        config.z_what_dim,
        hidden,
        config.glimpse_size,
        what_scale_offset=config.what_scale_offset,
        pres_bias=config.propagation_pres_bias,
    )
    discovery = DiscoveryRNN(
        glimpse_encoder=glimpse_encoder,
        input_dim=image_encoder.out_dim + hidden,
        max_objects=config.max_objects,
        z_what_dim=config.z_what_dim,
        hidden=hidden,
        glimpse_size=config.glimpse_size,
        where_init=what_where.where_loc,
        what_scale_offset=config.what_scale_offset,
        pres_bias=config.discovery_pres_bias,
    )
    if config.objective == "tracegraph":
        discovery.baseline = baseline_network(config)
        propagation.baseline = baseline_network(config)
    guide = SQAIRGuide(
        image_encoder, propagation, discovery, config.max_objects, config.z_what_dim, hidden
    )
    return model, guide


def baseline_network(config: Config) -> nn.Module:
    """NVIL baseline b(x_t, slot) for TraceGraph_ELBO: an MLP of the frame and a slot code."""
    n_in = config.image_size[0] * config.image_size[1] + config.max_objects
    return nn.Sequential(MLP([n_in, config.hidden, 1]), nn.Flatten(-2))


def num_parameters(*modules: nn.Module) -> int:
    """Trainable parameters of the given modules together."""
    return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)
