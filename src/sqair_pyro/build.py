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
from sqair_pyro.nn.modules import (
    MLP,
    ConvEncoder,
    GlimpseDecoderMLP,
    GlimpseDecoderSubpixel,
    GlimpseEncoderMLP,
    ImageEncoderMLP,
    SharedCNN,
)


def discovery_prior(config: Config) -> DiscoveryPrior:
    """The discovery prior named by ``config.discovery_prior``."""
    if config.discovery_prior == "categorical":
        return CategoricalDiscoveryPrior(config.max_objects, init_rho=config.categorical_init_rho)
    if config.discovery_prior == "geometric":
        return GeometricDiscoveryPrior(config.max_objects, config.geometric_rho)
    raise ValueError(f"unknown discovery prior {config.discovery_prior!r}")


def networks(config: Config) -> tuple[nn.Module, nn.Module, nn.Module]:
    """``(image_encoder, glimpse_encoder, glimpse_decoder)`` of the MLP or CONV variant.

    MLP: fully connected layers of ``hidden`` units. CONV (App. D.2): the encoders share a
    CNN with [16, 32, 32, 64] maps and strides [2, 2, 1, 1], each followed by its own fully
    connected layer; a subpixel-CNN decoder from FC [256, 800] (32 maps of 5x5) through
    [32, 64, 64] maps with strides [1, 2, 2].
    """
    hidden = config.hidden
    if config.encoder == "mlp":
        return (
            ImageEncoderMLP(config.image_size, [hidden, hidden]),
            GlimpseEncoderMLP(config.glimpse_size, [hidden, hidden]),
            GlimpseDecoderMLP(config.z_what_dim, [hidden] * 3, config.glimpse_size),
        )
    if config.encoder == "conv":
        cnn = SharedCNN([16, 32, 32, 64], [2, 2, 1, 1])
        start = (config.glimpse_size[0] // 4, config.glimpse_size[1] // 4)
        decoder = GlimpseDecoderSubpixel(
            config.z_what_dim,
            [256, 32 * start[0] * start[1]],
            start,
            [32, 64, 64],
            [1, 2, 2],
            config.glimpse_size,
        )
        return (
            ConvEncoder(cnn, config.image_size, hidden),
            ConvEncoder(cnn, config.glimpse_size, hidden),
            decoder,
        )
    raise ValueError(f"unknown encoder {config.encoder!r}; choose 'mlp' or 'conv'")


def discovery_rnn(
    config: Config,
    glimpse_encoder: nn.Module,
    image_encoder: nn.Module,
    what_where: WhatWherePrior,
    extra_dim: int,
) -> DiscoveryRNN:
    """AIR's inference RNN, which is also SQAIR's discovery (with ``extra_dim`` inputs)."""
    return DiscoveryRNN(
        glimpse_encoder=glimpse_encoder,
        input_dim=image_encoder.out_dim,
        extra_dim=extra_dim,
        max_objects=config.max_objects,
        z_what_dim=config.z_what_dim,
        hidden=config.hidden,
        glimpse_size=config.glimpse_size,
        where_init=what_where.where_loc,
        what_scale_offset=config.what_scale_offset,
        pres_bias=config.discovery_pres_bias,
    )


def build(config: Config) -> tuple[nn.Module, nn.Module]:
    """``(model, guide)`` as nn.Modules whose ``forward`` are the Pyro programs."""
    hidden = config.hidden
    what_where = WhatWherePrior(
        config.z_what_dim, config.where_scale_logit, config.where_scale_sd, config.where_shift_sd
    )
    image_encoder, glimpse_encoder, decoder = networks(config)
    likelihood = AdditiveSTLikelihood(decoder, config.image_size, config.obs_sd)
    if config.model == "air":
        model = AIRModel(config.max_objects, discovery_prior(config), what_where, likelihood)
        discovery = discovery_rnn(config, glimpse_encoder, image_encoder, what_where, 0)
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
    propagation = PropagationRNNs(
        glimpse_encoder,
        image_encoder.out_dim,
        config.z_what_dim,
        hidden,
        config.glimpse_size,
        what_scale_offset=config.what_scale_offset,
        pres_bias=config.propagation_pres_bias,
    )
    # Discovery also reads the summary of the propagated objects (Eq. 6), of `hidden` units.
    discovery = discovery_rnn(config, glimpse_encoder, image_encoder, what_where, hidden)
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
