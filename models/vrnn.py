"""The VRNN baseline (Chung et al., 2015; SQAIR paper App. D.3) as a Pyro model.

One latent vector per frame and no objects. An LSTM carries the past; it reads the features
of the previous frame and of the previous latent::

    (o_t, c_t) = LSTM([psi_x(x_{t-1}), psi_z(z_{t-1})], (o_{t-1}, c_{t-1}))   x_0, z_0 = 0
    z_t ~ N(mu(o_t), sigma(o_t))                                               the prior
    x_t ~ N(psi_dec([psi_z(z_t), o_t]), 0.3^2 I)                               the likelihood

with the same fixed pixel noise as SQAIR and AIR, so the bounds compare. The guide
(:mod:`sqair_pyro.guides.vrnn`) shares the LSTM and the feature extractors (:class:`VRNNCore`).
Departure: the paper trained its VRNNs with the FIVO bound; here every model is trained with
the same IWAE objective (``VIMCO_ELBO``, which is the IWAE bound for continuous latents).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from sqair_pyro.distributions import IsotropicNormal
from sqair_pyro.nn.modules import MLP, ConvEncoder, GaussianHead, SharedCNN, bcat


def _mlp(n_in: int, hidden: int, layers: int) -> nn.Sequential:
    """``layers`` fully connected layers of ``hidden`` units, ELU after each."""
    return nn.Sequential(MLP([n_in, *[hidden] * layers]), nn.ELU())


class FrameCNN(nn.Module):
    """CONV-VRNN's ``psi_x``: 3x3 convolutions with ``channels`` maps and ``strides`` (ELU),
    then one fully connected layer to ``hidden`` features; reads flattened frames, as the
    MLP's ``psi_x`` does."""

    def __init__(
        self, image_size: tuple[int, int], channels: list[int], strides: list[int], hidden: int
    ) -> None:
        super().__init__()
        self.image_size = tuple(image_size)
        self.cnn = ConvEncoder(SharedCNN(channels, strides), image_size, hidden)

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        return self.cnn(flat.unflatten(-1, self.image_size))


class TransposedCNNDecoder(nn.Module):
    """CONV-VRNN's ``psi_dec`` body: a fully connected layer to ``channels[0]`` maps of
    ``ceil(H / prod(strides))`` pixels a side, 3x3 transposed convolutions with ``channels``
    maps upsampling by ``strides`` (ELU), a 1x1 convolution to one map, cropped to the frame
    and flattened (..., H * W), as the MLP's output."""

    def __init__(
        self,
        n_in: int,
        image_size: tuple[int, int],
        channels: list[int],
        strides: list[int],
    ) -> None:
        super().__init__()
        self.image_size = tuple(image_size)
        self.start = tuple(math.ceil(size / math.prod(strides)) for size in image_size)
        self.fc = nn.Sequential(nn.Linear(n_in, channels[0] * math.prod(self.start)), nn.ELU())
        layers: list[nn.Module] = []
        for c_in, c_out, stride in zip(
            channels, [*channels[1:], channels[-1]], strides, strict=True
        ):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 3, stride, padding=1, output_padding=stride - 1),
                nn.ELU(),
            ]
        self.net = nn.Sequential(*layers, nn.Conv2d(channels[-1], 1, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        lead = features.shape[:-1]
        maps = self.fc(features).reshape(lead.numel(), -1, *self.start)
        out = self.net(maps)[:, 0, : self.image_size[0], : self.image_size[1]]
        return out.reshape(*lead, math.prod(self.image_size))


class VRNNCore(nn.Module):
    """What the model and the guide share: ``psi_x``, ``psi_z`` and the LSTM."""

    def __init__(
        self,
        image_size: tuple[int, int],
        z_dim: int,
        hidden: int,
        layers: int,
        lstm: int,
        psi_x: nn.Module | None = None,
    ) -> None:
        """``psi_x``: flattened frames (..., H * W) to ``hidden`` features; default an MLP of
        ``layers`` layers (MLP-VRNN), e.g. :class:`FrameCNN` for CONV-VRNN."""
        super().__init__()
        self.image_size, self.z_dim, self.out_dim = tuple(image_size), z_dim, lstm
        self.layers = layers
        self.psi_x = _mlp(math.prod(image_size), hidden, layers) if psi_x is None else psi_x
        self.psi_z = _mlp(z_dim, hidden, layers)
        self.lstm = nn.LSTMCell(2 * hidden, lstm)

    def initial(self, batch: int) -> tuple[torch.Tensor, ...]:
        """``(x_0, z_0, o_0, c_0)`` of ``batch`` sequences: zeros."""
        zeros = self.lstm.weight_ih.new_zeros
        return (
            zeros(batch, *self.image_size),
            zeros(batch, self.z_dim),
            zeros(batch, self.out_dim),
            zeros(batch, self.out_dim),
        )

    def step(
        self, x_prev: torch.Tensor, z_prev: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(o_t, c_t)`` from the previous frame (..., H, W), latent and state; leading
        (particle, batch) dims broadcast."""
        inputs = bcat([self.psi_x(x_prev.flatten(-2)), self.psi_z(z_prev)])
        lead = inputs.shape[:-1]
        o, c = (s.expand(*lead, s.shape[-1]).reshape(-1, s.shape[-1]) for s in state)
        o, c = self.lstm(inputs.reshape(-1, inputs.shape[-1]), (o, c))
        return o.reshape(*lead, -1), c.reshape(*lead, -1)


class VRNNDecoder(nn.Module):
    """``psi_dec([psi_z(z_t), o_t])``: the mean of frame ``t`` in (0, 1)."""

    def __init__(
        self,
        core: VRNNCore,
        image_size: tuple[int, int],
        hidden: int,
        layers: int,
        body: nn.Module | None = None,
    ) -> None:
        """``body``: features ``[psi_z(z_t), o_t]`` to flattened frame logits (..., H * W);
        default an MLP of ``layers`` layers (MLP-VRNN), e.g. :class:`TransposedCNNDecoder`."""
        super().__init__()
        self.core, self.image_size = core, tuple(image_size)
        n_in = hidden + core.out_dim
        self.net = MLP([n_in, *[hidden] * layers, math.prod(image_size)]) if body is None else body

    def forward(self, z: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        features = bcat([self.core.psi_z(z), o])
        return torch.sigmoid(self.net(features)).unflatten(-1, self.image_size)


class VRNNModel(nn.Module):
    """``p(x_{1:T}, z_{1:T})`` of the VRNN (see the module docstring)."""

    #: A prior over time: futures can be imagined.
    temporal = True
    #: No objects (no boxes, counts or identities).
    objects = False
    #: Its dynamics read the previous frame: to imagine futures, give it the observed frames.
    reads_frames = True

    def __init__(self, decoder: VRNNDecoder, hidden: int, layers: int, obs_sd: float) -> None:
        super().__init__()
        self.decoder, self.core, self.obs_sd = decoder, decoder.core, obs_sd
        self.prior = GaussianHead(self.core.out_dim, self.core.z_dim, [hidden] * layers)

    def forward(
        self,
        images: torch.Tensor | None,
        num_frames: int | None = None,
        batch_size: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """The generative story with frame ``t`` of ``images`` (B, T, H, W) observed at
        ``x_t``. Frames beyond those of ``images`` (all, with ``images=None``) up to
        ``num_frames`` come from the prior, each frame's noise-free mean fed back as the next
        input: conditional generation after the observed frames."""
        pyro.module("vrnn_model", self)
        if images is not None:
            batch_size = images.shape[0]
            num_frames = max(num_frames or 0, images.shape[1])
        if batch_size is None or num_frames is None:
            raise ValueError("without images, give num_frames and batch_size")
        x_prev, z, o, c = self.core.initial(batch_size)
        latents, canvases = [], []
        with pyro.plate("data", batch_size, dim=-1):
            for t in range(num_frames):
                o, c = self.core.step(x_prev, z, (o, c))
                loc, scale = self.prior(o)
                z = pyro.sample(f"z_{t}", dist.Normal(loc, scale).to_event(1))
                mean = self.decoder(z, o)
                seen = images is not None and t < images.shape[1]
                observed = images[:, t] if seen else None
                pyro.sample(f"x_{t}", IsotropicNormal(mean, self.obs_sd, event_dim=2), obs=observed)
                x_prev = observed if seen else mean
                latents.append(z)
                canvases.append(mean)
        return {"z": torch.stack(latents, -2), "canvas": torch.stack(canvases, -3)}
