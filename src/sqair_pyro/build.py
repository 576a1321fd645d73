"""Build a model and its guide from a :class:`~sqair_pyro.config.Config`: the built-in
components, registered by name (:mod:`sqair_pyro.registry`), and :func:`build`."""

from __future__ import annotations

from torch import nn

from sqair_pyro.config import Config
from sqair_pyro.guides.air import AIRGuide, DiscoveryRNN
from sqair_pyro.guides.sqair import PropagationRNNs, SQAIRGuide
from sqair_pyro.guides.vrnn import VRNNGuide
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
from sqair_pyro.models.vrnn import (
    FrameCNN,
    TransposedCNNDecoder,
    VRNNCore,
    VRNNDecoder,
    VRNNModel,
)
from sqair_pyro.nn.modules import (
    MLP,
    Borrowed,
    ConvEncoder,
    EncoderMLP,
    GlimpseDecoderMLP,
    GlimpseDecoderSubpixel,
    GlimpseEncoderMLP,
    SharedCNN,
)
from sqair_pyro.registry import component, import_module, register, spec


@register("discovery_prior", "categorical")
def categorical_discovery_prior(config: Config) -> DiscoveryPrior:
    """The paper's learnable categorical over the number of new objects (Eq. 8)."""
    return CategoricalDiscoveryPrior(config.max_objects, init_rho=config.categorical_init_rho)


@register("discovery_prior", "geometric")
def geometric_discovery_prior(config: Config) -> DiscoveryPrior:
    """AIR's fixed geometric prior: each further object with probability ``geometric_rho``."""
    return GeometricDiscoveryPrior(config.max_objects, config.geometric_rho)


@register("propagation_prior", "gru")
def gru_propagation_prior(config: Config) -> PropagationPrior:
    """The paper's propagation prior: a GRU per object over time (Eq. 9-10)."""
    return PropagationPrior(config.z_what_dim, config.hidden, survive_bias=config.survive_bias)


@register("likelihood", "additive_st")
def additive_st_likelihood(config: Config, decoder: nn.Module) -> AdditiveSTLikelihood:
    """Glimpses decoded, placed by a spatial transformer and added (Alg. 1, Eq. 1)."""
    return AdditiveSTLikelihood(
        decoder, config.image_size, config.obs_sd, centre_glimpses=config.centre_glimpses
    )


@register("networks", "mlp")
def mlp_networks(config: Config) -> tuple[nn.Module, nn.Module, nn.Module]:
    """``(image_encoder, glimpse_encoder, glimpse_decoder)`` of fully connected layers of
    ``hidden`` units (MLP-SQAIR, App. D.1)."""
    hidden = config.hidden
    return (
        EncoderMLP(config.image_size, [hidden, hidden]),
        GlimpseEncoderMLP(config.glimpse_size, [hidden, hidden]),
        GlimpseDecoderMLP(config.z_what_dim, [hidden] * 3, config.decoded_glimpse),
    )


def _conv_networks(
    config: Config,
    cnn: SharedCNN,
    fc: list[int],
    maps_in: int,
    maps: list[int],
    strides: list[int],
) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Encoders sharing ``cnn``, each with its own fully connected layer of ``hidden`` units,
    and a subpixel-CNN decoder: FC layers ``fc`` and one reshaped to ``maps_in`` maps of a
    quarter of the glimpse size, then ``maps`` feature maps upsampled by ``strides``."""
    start = (config.glimpse_size[0] // 4, config.glimpse_size[1] // 4)
    fc = [*fc, maps_in * start[0] * start[1]]
    decoder = GlimpseDecoderSubpixel(
        config.z_what_dim, fc, start, maps, strides, config.glimpse_size
    )
    return (
        ConvEncoder(cnn, config.image_size, config.hidden),
        ConvEncoder(cnn, config.glimpse_size, config.hidden),
        decoder,
    )


@register("networks", "conv")
def conv_networks(config: Config) -> tuple[nn.Module, nn.Module, nn.Module]:
    """CONV-SQAIR's networks (App. D.2): a CNN with [16, 32, 32, 64] maps and strides
    [2, 2, 1, 1]; a decoder from FC [256, 800] (32 maps of 5x5) through [32, 64, 64] maps with
    strides [1, 2, 2]."""
    cnn = SharedCNN([16, 32, 32, 64], [2, 2, 1, 1])
    return _conv_networks(config, cnn, [256], 32, [32, 64, 64], [1, 2, 2])


@register("networks", "conv_pedestrians")
def conv_pedestrian_networks(config: Config) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The pedestrian model's networks (App. E): a CNN with [16, 32, 64, 64] maps and strides
    [2, 2, 2, 1]; a decoder from FC [128, 1344] (64 maps of 7x3 for 28x12 glimpses) through
    [64, 64] maps with strides [2, 2]. With the preset's 128-unit layers the model and guide
    have 1.68M parameters, where the paper states 3.5M: the description accounts for no
    more (the image encoder's layer reads 8x8x64 maps of a 64x64 crop), so the original
    must have had layers it does not mention."""
    cnn = SharedCNN([16, 32, 64, 64], [2, 2, 2, 1])
    return _conv_networks(config, cnn, [128], 64, [64, 64], [2, 2])


@register("networks", "mlp_vrnn")
def mlp_vrnn_networks(
    config: Config, z_dim: int = 165, layers: int = 3
) -> tuple[nn.Module, None, nn.Module]:
    """MLP-VRNN's networks (App. D.3, the paper's medium size): the core shared by model and
    guide (``psi_x``, ``psi_z`` of ``layers`` layers of ``hidden`` units, an LSTM of
    ``hidden``) in the encoder's place, no glimpse encoder, and ``psi_dec``; ``z_dim`` 165,
    the most latent dimensions SQAIR uses per frame."""
    core = VRNNCore(config.image_size, z_dim, config.hidden, layers, config.hidden)
    return core, None, VRNNDecoder(core, config.image_size, config.hidden, layers)


@register("networks", "conv_vrnn")
def conv_vrnn_networks(
    config: Config,
    z_dim: int = 165,
    channels: tuple[int, ...] = (32, 32, 32, 64, 64, 64),
    strides: tuple[int, ...] = (1, 2, 1, 2, 1, 2),
) -> tuple[nn.Module, None, nn.Module]:
    """CONV-VRNN's networks (App. D.3, the paper's medium size): ``psi_x`` a CNN of 3x3
    convolutions with ``channels`` maps and ``strides`` and one fully connected layer, the
    decoder a transposed CNN mirroring it; other layers one of ``hidden`` units."""
    psi_x = FrameCNN(config.image_size, list(channels), list(strides), config.hidden)
    core = VRNNCore(config.image_size, z_dim, config.hidden, 1, config.hidden, psi_x)
    body = TransposedCNNDecoder(
        2 * config.hidden, config.image_size, list(channels[::-1]), list(strides[::-1])
    )
    return core, None, VRNNDecoder(core, config.image_size, config.hidden, 1, body)


def discovery_rnn(
    config: Config,
    glimpse_encoder: nn.Module,
    image_encoder: nn.Module,
    what_where: WhatWherePrior,
    extra_dim: int,
) -> DiscoveryRNN:
    """AIR's inference RNN, which is also SQAIR's discovery (with ``extra_dim`` inputs)."""
    discovery = DiscoveryRNN(
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
        centre_glimpses=config.centre_glimpses,
    )
    discovery.align_steps = config.discovery_aligns_window
    return discovery


def what_where_prior(config: Config) -> WhatWherePrior:
    """``p^D(z_what, z_where)`` of new objects (Eq. 7), fixed Gaussians."""
    return WhatWherePrior(
        config.z_what_dim,
        config.where_scale_logit,
        config.where_scale_sd,
        config.where_shift_sd,
        config.where_slot_shift_y,
    )


#: The guide options that only SQAIR's guide takes (they read the propagated objects).
SQAIR_GUIDE_OPTIONS = (
    "discovery_steps_over_propagated",
    "discovery_masks_propagated",
    "propagation_reads_residual",
    "propagation_aligns_window",
)
#: The guide options of the object models, AIR's and SQAIR's.
OBJECT_GUIDE_OPTIONS = (
    "discovery_reads_difference",
    "discovery_aligns_window",
    *SQAIR_GUIDE_OPTIONS,
)


def borrowed_decoder(config: Config, option: str, decoder: nn.Module | None) -> Borrowed | None:
    """The model's ``decoder``, borrowed by a guide that reads what the model draws, where the
    guide ``option`` of ``config`` is on; None where it is off."""
    if not getattr(config, option):
        return None
    if decoder is None:
        raise ValueError(f"{option} needs networks with a glimpse decoder")
    return Borrowed(decoder)


def object_likelihood(config: Config, decoder: nn.Module) -> nn.Module:
    """The registered ``config.likelihood`` of an object model around ``decoder``; one that
    does not draw as ``centre_glimpses`` says is refused (the guides read the drawing so)."""
    likelihood = component("likelihood", config.likelihood)(config, decoder)
    if config.centre_glimpses and not getattr(likelihood, "centre_glimpses", False):
        raise ValueError(
            f"centre_glimpses needs a likelihood that centres, not {config.likelihood!r}"
        )
    return likelihood


@register("model", "air")
def air_model(config: Config, decoder: nn.Module) -> AIRModel:
    """AIR (Eslami et al. 2016) as SQAIR's discovery alone: each frame on its own."""
    likelihood = object_likelihood(config, decoder)
    prior = component("discovery_prior", config.discovery_prior)(config)
    return AIRModel(config.max_objects, prior, what_where_prior(config), likelihood)


@register("guide", "air")
def air_guide(
    config: Config, image_encoder: nn.Module, glimpse_encoder: nn.Module, decoder: nn.Module
) -> AIRGuide:
    """AIR's inference: the image encoded once, then the discovery RNN (Eq. 2)."""
    for name in SQAIR_GUIDE_OPTIONS:
        if getattr(config, name):
            raise ValueError(f"{name} needs SQAIR: AIR propagates nothing")
    discovery = discovery_rnn(config, glimpse_encoder, image_encoder, what_where_prior(config), 0)
    discovery.reads_difference = borrowed_decoder(config, "discovery_reads_difference", decoder)
    discovery.aligns_with = borrowed_decoder(config, "discovery_aligns_window", decoder)
    if config.objective == "tracegraph":
        discovery.baseline = baseline_network(config)
    return AIRGuide(image_encoder, discovery)


@register("model", "sqair")
def sqair_model(config: Config, decoder: nn.Module) -> SQAIRModel:
    """SQAIR's generative model: propagation then discovery in every frame (Eq. 3-10)."""
    likelihood = object_likelihood(config, decoder)
    return SQAIRModel(
        config.max_objects,
        component("discovery_prior", config.discovery_prior)(config),
        what_where_prior(config),
        component("propagation_prior", config.propagation_prior)(config),
        likelihood,
    )


@register("guide", "sqair")
def sqair_guide(
    config: Config, image_encoder: nn.Module, glimpse_encoder: nn.Module, decoder: nn.Module
) -> SQAIRGuide:
    """SQAIR's inference: propagation (Alg. 2) then discovery (Alg. 3) in every frame; with
    ``propagation_reads_residual`` or ``discovery_reads_difference`` it shares the model's
    ``decoder``."""
    hidden = config.hidden
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
    discovery = discovery_rnn(
        config, glimpse_encoder, image_encoder, what_where_prior(config), hidden
    )
    if config.discovery_reads_difference and config.discovery_masks_propagated:
        raise ValueError(
            "discovery_reads_difference and discovery_masks_propagated are two readings of "
            "the frame after the first: choose one"
        )
    discovery.reads_difference = borrowed_decoder(config, "discovery_reads_difference", decoder)
    discovery.aligns_with = borrowed_decoder(config, "discovery_aligns_window", decoder)
    if config.objective == "tracegraph":
        discovery.baseline = baseline_network(config)
        propagation.baseline = baseline_network(config)
    return SQAIRGuide(
        image_encoder,
        propagation,
        discovery,
        config.max_objects,
        config.z_what_dim,
        hidden,
        step_over_propagated=config.discovery_steps_over_propagated,
        mask_propagated=config.discovery_masks_propagated,
        decoder=borrowed_decoder(config, "propagation_reads_residual", decoder),
        align_steps=config.propagation_aligns_window,
        centre_glimpses=config.centre_glimpses,
    )


@register("model", "vrnn")
def vrnn_model(config: Config, decoder: VRNNDecoder) -> VRNNModel:
    """The VRNN baseline (Chung et al. 2015; App. D.3), around its networks' decoder."""
    if config.centre_glimpses:
        raise ValueError("centre_glimpses needs AIR or SQAIR: the VRNN draws no glimpses")
    return VRNNModel(decoder, config.hidden, decoder.core.layers, config.obs_sd)


@register("guide", "vrnn")
def vrnn_guide(
    config: Config, core: VRNNCore, glimpse_encoder: None, decoder: VRNNDecoder
) -> VRNNGuide:
    """The VRNN's inference network, on the model's own core."""
    for name in OBJECT_GUIDE_OPTIONS:
        if getattr(config, name):
            raise ValueError(f"{name} needs AIR or SQAIR: the VRNN has no objects")
    return VRNNGuide(core, config.hidden, core.layers)


def build(config: Config) -> tuple[nn.Module, nn.Module]:
    """``(model, guide)`` as nn.Modules whose ``forward`` are the Pyro programs.

    After importing the modules in ``config.imports``: the networks (``config.encoder``),
    the model (``config.model``, around the decoder) and the guide (``config.guide``, or the
    model's own name; around the encoders, and the model's decoder where it reads what the
    model draws), each a registered component.
    """
    for module in config.imports:
        import_module(module)
    guide_label = config.guide or spec(config.model)[0]  # the model's arguments are its own
    try:
        image_encoder, glimpse_encoder, decoder = component("networks", config.encoder)(config)
        drawn = getattr(decoder, "glimpse_size", None)
        if config.decoder_glimpse_size is not None and drawn != config.decoder_glimpse_size:
            raise ValueError(
                f"decoder_glimpse_size needs networks that size their decoder by it "
                f"(mlp), not {spec(config.encoder)[0]!r}"
            )
        model = component("model", config.model)(config, decoder)
        guide = component("guide", guide_label)(config, image_encoder, glimpse_encoder, decoder)
    except (AttributeError, TypeError) as error:
        raise ValueError(
            f"the components do not fit together (networks {spec(config.encoder)[0]!r}, "
            f"model {spec(config.model)[0]!r}, guide {guide_label!r}): {error}"
        ) from error
    return model, guide


def baseline_network(config: Config) -> nn.Module:
    """NVIL baseline b(x_t, slot) for TraceGraph_ELBO: an MLP of the frame and a slot code."""
    n_in = config.image_size[0] * config.image_size[1] + config.max_objects
    return nn.Sequential(MLP([n_in, config.hidden, 1]), nn.Flatten(-2))


def num_parameters(*modules: nn.Module) -> int:
    """Trainable parameters of the given modules together (a shared one counted once)."""
    unique = {id(p): p for m in modules for p in m.parameters() if p.requires_grad}
    return sum(p.numel() for p in unique.values())
