"""Pure torch networks shared by the models and guides (paper App. D.2). No Pyro in here.

Every module accepts any number of leading batch dimensions (batch and particles share
them), so the Pyro programs never reshape by hand.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from sqair_pyro.nn.precision import full_precision
from sqair_pyro.nn.spatial_transformer import resampling_matrix


class MLP(nn.Sequential):
    """Fully connected layers with ELU between them and no activation after the last."""

    def __init__(self, sizes: list[int]):
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:
                layers.append(nn.ELU())
        super().__init__(*layers)


class GaussianHead(nn.Module):
    """An MLP from features to ``(loc, scale)`` of a diagonal Gaussian.

    ``scale = softplus(raw + offset) + min_scale``; the offset is trainable and starts at
    ``scale_offset`` (e.g. -3 for the posterior of z_where: small initial variance).
    ``loc_init`` sets the initial bias of the location (e.g. the prior's mean).
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        hidden: list[int],
        scale_offset: float = 0.0,
        min_scale: float = 1e-3,
        loc_init: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.net = MLP([n_in, *hidden, 2 * n_out])
        self.offset = nn.Parameter(torch.full((n_out,), float(scale_offset)))
        self.min_scale = min_scale
        if loc_init is not None:
            with torch.no_grad():
                self.net[-1].bias[:n_out].copy_(loc_init)

    @full_precision  # distribution parameters in float32 under mixed precision
    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.net(features).chunk(2, dim=-1)
        return loc, F.softplus(raw + self.offset) + self.min_scale


class BernoulliHead(nn.Module):
    """An MLP from features to a presence probability; the last bias starts at ``bias``."""

    def __init__(self, n_in: int, hidden: list[int], bias: float) -> None:
        super().__init__()
        self.net = MLP([n_in, *hidden, 1])
        nn.init.constant_(self.net[-1].bias, bias)

    @full_precision
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(features))


def resamples(
    state: dict[str, torch.Tensor],
    weight: str,
    axis: int,
    trained: tuple[int, int],
    own: tuple[int, int],
    message: str,
) -> bool:
    """Whether ``state[weight]`` is a layer over glimpses of ``trained`` pixels (along
    ``axis`` of its matrix) and this module's glimpses (``own``) differ: then it warns
    ``message`` (stacklevel of the caller's caller) and the caller resamples the layer.
    A weight that is missing, or not over such glimpses, is left to the warm start, which
    skips what does not fit."""
    if tuple(trained) == tuple(own) or not isinstance(state.get(weight), torch.Tensor):
        return False
    if state[weight].dim() != 2 or state[weight].shape[axis] != math.prod(trained):
        return False
    warnings.warn(message, stacklevel=3)
    return True


class EncoderMLP(nn.Module):
    """An image to a feature vector (MLP variant): ``h^enc(x_t)`` of a whole frame and
    ``h^glimpse(g)`` of a glimpse are both this, on images of their own size."""

    def __init__(self, image_size: tuple[int, int], sizes: list[int]) -> None:
        super().__init__()
        self.net = MLP([math.prod(image_size), *sizes])
        self.out_dim = sizes[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.elu(self.net(images.flatten(-2)))


class GlimpseEncoderMLP(EncoderMLP):
    """``h^glimpse(g)``: :class:`EncoderMLP` on the glimpses the guide reads, of the config's
    ``glimpse_size``. A warm start from a checkpoint that read glimpses of another size gets
    its input layer resampled (:meth:`resample_state`)."""

    #: the config field of a checkpoint that :meth:`resample_state` reads the trained size from
    resampled_from = "glimpse_size"

    def __init__(self, glimpse_size: tuple[int, int], sizes: list[int]) -> None:
        super().__init__(glimpse_size, sizes)
        self.glimpse_size = tuple(glimpse_size)

    def resample_state(
        self, state: dict[str, torch.Tensor], prefix: str, trained: tuple[int, int]
    ) -> None:
        """In ``state`` (a checkpoint's, keys under ``prefix``), resample an input layer
        trained on glimpses of ``trained`` pixels to this encoder's: with ``R`` the bilinear
        resampling of this encoder's glimpse to the trained one's on the same window
        (:func:`~sqair_pyro.nn.spatial_transformer.resampling_matrix`), the weight becomes
        ``W R``, so that it reads nearly what it read through the same windows (a departure
        from the paper's 20x20 glimpses; docs/results.md, "A finer read glimpse")."""
        weight, (height, width) = f"{prefix}net.0.weight", self.glimpse_size
        message = (
            f"the checkpoint's glimpse encoder read {trained[0]}x{trained[1]} glimpses, "
            f"this one reads {height}x{width}: its input layer is resampled"
        )
        if not resamples(state, weight, 1, trained, self.glimpse_size, message):
            return
        resample = resampling_matrix(self.glimpse_size, tuple(trained)).to(state[weight])
        state[weight] = state[weight] @ resample


class GlimpseDecoderMLP(nn.Module):
    """``f^dec(z_what)``: z_what to glimpse intensities in (0, 1) (Alg. 1 line 4).

    The output bias starts at ``output_bias`` (-2: dim initial glimpses), since too bright
    initial reconstructions teach the guide to switch every object off for good. Its
    ``glimpse_size`` may be finer than the glimpse the encoders read (the config's
    ``decoder_glimpse_size``, a departure from the paper; :meth:`resample_state`).
    """

    #: the config field of a checkpoint that :meth:`resample_state` reads the trained size from
    resampled_from = "decoded_glimpse"

    def __init__(
        self,
        z_what_dim: int,
        sizes: list[int],
        glimpse_size: tuple[int, int],
        output_bias: float = -2.0,
    ) -> None:
        super().__init__()
        self.glimpse_size = glimpse_size
        self.net = MLP([z_what_dim, *sizes, math.prod(glimpse_size)])
        self.output_bias = output_bias

    @full_precision  # the likelihood's mean: exact to float32 under mixed precision
    def forward(self, z_what: torch.Tensor) -> torch.Tensor:
        logits = self.net(z_what) + self.output_bias
        return torch.sigmoid(logits).unflatten(-1, self.glimpse_size)

    def resample_state(
        self, state: dict[str, torch.Tensor], prefix: str, trained: tuple[int, int]
    ) -> None:
        """In ``state`` (a checkpoint's, keys under ``prefix``), resample an output layer
        trained for glimpses of ``trained`` pixels to this decoder's: each pixel's logit
        weights and bias interpolated bilinearly from the trained pixels'
        (:func:`~sqair_pyro.nn.spatial_transformer.resampling_matrix`), so that it draws
        nearly what it drew through the same windows (measured: docs/results.md, "A finer
        decoded glimpse")."""
        last = len(self.net) - 1
        weight, bias = f"{prefix}net.{last}.weight", f"{prefix}net.{last}.bias"
        height, width = self.glimpse_size
        message = (
            f"the checkpoint's decoder drew {trained[0]}x{trained[1]} glimpses, this one draws "
            f"{height}x{width}: its output layer is resampled"
        )
        own = self.glimpse_size
        if bias not in state or not resamples(state, weight, 0, trained, own, message):
            return
        resample = resampling_matrix(tuple(trained), self.glimpse_size).to(state[weight])
        state[weight] = resample @ state[weight]
        state[bias] = resample @ state[bias]


class Borrowed:
    """A module that a program uses but does not own, as a guide reads with the model's decoder:
    not a submodule, so its weights stay out of the borrower's ``state_dict`` and
    ``parameters()`` (they are saved and trained as the owner's) and ``.to()`` or ``.eval()``
    on the borrower alone leave it as it is. ``copy.deepcopy`` keeps the reference, or
    follows the module to its copy where the same call copied the owner first
    (``copy.deepcopy(guide, {id(old_decoder): new_decoder})`` points it elsewhere)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, *args: object, **kwargs: object) -> torch.Tensor:
        return self.module(*args, **kwargs)

    def __deepcopy__(self, memo: dict[int, object]) -> Borrowed:
        return Borrowed(memo.get(id(self.module), self.module))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"Borrowed({type(self.module).__name__})"


def bcat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate on the last dim after broadcasting the leading (batch, particle) dims."""
    lead = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(*lead, t.shape[-1]) for t in tensors], dim=-1)


class SharedCNN(nn.Module):
    """CONV-SQAIR's convolutional trunk, shared by the image and glimpse encoders (App. D.2).

    3x3 convolutions with ``channels`` feature maps and ``strides``, ELU after each.
    """

    def __init__(self, channels: list[int], strides: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        n_in = 1
        for n_out, stride in zip(channels, strides, strict=True):
            layers += [nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1), nn.ELU()]
            n_in = n_out
        self.net = nn.Sequential(*layers)

    def output_size(self, size: tuple[int, int]) -> int:
        """Flattened output size for an input of ``size`` (H, W)."""
        with torch.no_grad():
            return self.net(torch.zeros(1, 1, *size)).numel()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(..., H, W) to (..., features)."""
        lead = images.shape[:-2]
        out = self.net(images.reshape(lead.numel(), 1, *images.shape[-2:]))
        return out.reshape(*lead, math.prod(out.shape[1:]))


class ConvEncoder(nn.Module):
    """The shared CNN followed by this encoder's own fully connected layer (ELU)."""

    def __init__(self, cnn: SharedCNN, input_size: tuple[int, int], out_dim: int) -> None:
        super().__init__()
        self.cnn = cnn
        self.linear = nn.Linear(cnn.output_size(input_size), out_dim)
        self.out_dim = out_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.elu(self.linear(self.cnn(images)))


class PixelShuffle(nn.PixelShuffle):
    """``nn.PixelShuffle`` that also takes an empty batch.

    PyTorch's pixel-shuffle backward fails on zero rows (it returns the output's shape as the
    input's gradient), and a decoder sees zero rows whenever no object of a batch is present;
    there the same rearrangement is written as a reshape, whose backward is right.
    """

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        if maps.shape[0] > 0:
            return super().forward(maps)
        r = self.upscale_factor
        rows, channels, height, width = maps.shape
        if channels % r**2:
            raise ValueError(
                f"pixel shuffle by {r} needs channels divisible by {r**2}, got {channels}"
            )
        return maps.reshape(rows, channels // r**2, height * r, width * r)


class GlimpseDecoderSubpixel(nn.Module):
    """CONV-SQAIR's glimpse decoder (App. D.2; Shi et al., 2016).

    Two fully connected layers ``fc`` (the last reshaped to ``channels[0]`` maps of
    ``start`` pixels), then 3x3 convolutions with ``channels`` feature maps, each upsampling by
    its stride with a pixel shuffle, and a 1x1 output convolution to one channel.

    Under mixed precision its hidden layers run in bfloat16 like every other network, and the
    output convolution and the sigmoid in float32 (:meth:`intensities`). It is most of a
    CONV-SQAIR step (78%), and in bfloat16 2.2x faster (docs/results.md, "Mixed precision");
    the float32 output layer spares the logits one more bfloat16 rounding. Its maps are laid
    out channels-last, which oneDNN's CPU convolutions run faster than the contiguous layout:
    1.21x in bfloat16 on 163 glimpses (a frame of a batch), 1.34x on 480, forward and
    backward (docs/results.md, "The decoder's maps channels-last"); measured on the CPU only,
    never on a GPU.
    """

    def __init__(
        self,
        z_what_dim: int,
        fc: list[int],
        start: tuple[int, int],
        channels: list[int],
        strides: list[int],
        glimpse_size: tuple[int, int],
        output_bias: float = -2.0,
    ) -> None:
        super().__init__()
        self.start = start
        self.start_channels = fc[-1] // (start[0] * start[1])
        self.fc = nn.Sequential(MLP([z_what_dim, *fc]), nn.ELU())
        layers: list[nn.Module] = []
        n_in = self.start_channels
        for n_out, stride in zip(channels, strides, strict=True):
            layers += [nn.Conv2d(n_in, n_out * stride**2, 3, padding=1)]
            if stride > 1:
                layers.append(PixelShuffle(stride))
            layers.append(nn.ELU())
            n_in = n_out
        layers.append(nn.Conv2d(n_in, 1, 1))
        self.net = nn.Sequential(*layers)
        self.glimpse_size = glimpse_size
        self.output_bias = output_bias

    def forward(self, z_what: torch.Tensor) -> torch.Tensor:
        lead = z_what.shape[:-1]
        maps = self.fc(z_what).reshape(lead.numel(), self.start_channels, *self.start)
        maps = maps.contiguous(memory_format=torch.channels_last)
        return self.intensities(self.net[:-1](maps)).reshape(*lead, *self.glimpse_size)

    @full_precision
    def intensities(self, features: torch.Tensor) -> torch.Tensor:
        """The output convolution and the sigmoid: glimpse intensities in (0, 1), float32."""
        return torch.sigmoid(self.net[-1](features) + self.output_bias)[:, 0]
