"""Distributions the models need beyond Pyro's own."""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

__all__ = ["IsotropicNormal"]

_EMPTY = torch.Size()


class IsotropicNormal(TorchDistribution):
    r"""A Normal with one fixed scale over the last ``event_dim`` dims of ``loc``:
    the pixel noise of the likelihood (paper Eq. 1, :math:`x \sim N(y, \sigma^2 I)`).

    .. math::

        \log p(x) = -\frac{\lVert x - \mu \rVert^2}{2\sigma^2}
        - n \log\bigl(\sigma\sqrt{2\pi}\bigr),

    with :math:`n` the number of elements of an event. It has the same density as
    ``dist.Normal(loc, scale).to_event(event_dim)``, but ``log_prob`` makes one pass over the
    pixels (a difference, its square, a sum) where ``Normal`` first broadcasts the scalar
    scale to every pixel and runs about ten full-size operations, forward and backward.

    :param torch.Tensor loc: the mean, batch shape followed by the event shape.
    :param float scale: the standard deviation :math:`\sigma > 0` of every element.
    :param int event_dim: how many rightmost dims of ``loc`` form one event.
    """

    arg_constraints = {"loc": constraints.real}
    support = constraints.real
    has_rsample = True

    def __init__(
        self,
        loc: torch.Tensor,
        scale: float,
        event_dim: int,
        validate_args: bool | None = None,
    ) -> None:
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        if not 0 <= event_dim <= loc.dim():
            raise ValueError(f"event_dim must be in 0..{loc.dim()} for loc of shape {loc.shape}")
        self.loc, self.scale = loc, scale
        split = loc.dim() - event_dim
        super().__init__(loc.shape[:split], loc.shape[split:], validate_args=validate_args)

    def expand(self, batch_shape: torch.Size, _instance: object = None) -> IsotropicNormal:
        shape = torch.Size(batch_shape) + self.event_shape
        return IsotropicNormal(self.loc.expand(shape), self.scale, len(self.event_shape))

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        return torch.full_like(self.loc, self.scale**2)

    def rsample(self, sample_shape: torch.Size = _EMPTY) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        noise = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + self.scale * noise

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        total = SquaredDistance.apply(self.loc, value, len(self.event_shape))
        n = math.prod(self.event_shape)
        return total * (-0.5 / self.scale**2) - n * math.log(self.scale * math.sqrt(2 * math.pi))


class SquaredDistance(torch.autograd.Function):
    r""":math:`\lVert a - b \rVert^2` over the last ``event_dim`` dims, broadcasting ``a``
    against ``b``, with a hand-written backward :math:`\partial/\partial a = 2 (a - b)`.

    It keeps one full-size tensor (the difference) for the backward and writes one (the
    gradient); autograd's ``(a - b).square().sum()`` keeps two and makes four full-size
    passes backward. On frames that do not fit in the cache this is most of the likelihood's
    cost.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, event_dim: int) -> torch.Tensor:
        diff = a - b
        ctx.save_for_backward(diff)
        ctx.shapes = a.shape, b.shape
        if event_dim == 0:
            return diff.square()
        flat = diff.flatten(-event_dim) if event_dim > 1 else diff
        return torch.linalg.vecdot(flat, flat)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        (diff,) = ctx.saved_tensors
        event_dim = diff.dim() - grad.dim()
        grad_a = diff * (2 * grad).reshape(grad.shape + (1,) * event_dim)
        shape_a, shape_b = ctx.shapes
        return (
            _sum_to(grad_a, shape_a) if ctx.needs_input_grad[0] else None,
            _sum_to(-grad_a, shape_b) if ctx.needs_input_grad[1] else None,
            None,
        )


def _sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``grad`` summed down to the broadcast ``shape`` it came from."""
    return grad if grad.shape == shape else grad.sum_to_size(shape)
