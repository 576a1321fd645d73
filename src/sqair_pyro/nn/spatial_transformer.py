"""The spatial transformer ST of the paper (Fig. 1; Alg. 1-3), for axis-aligned boxes.

``z_where = (s_x, s_y, t_x, t_y)`` maps glimpse coordinates ``u`` to canvas coordinates ``x``,
both normalised to ``[-1, 1]`` (``align_corners=False`` convention)::

    x = s_x * u_x + t_x,        y = s_y * u_y + t_y.

So a glimpse covers a window ``s_x * W`` pixels wide centred at pixel ``(t_x + 1) W / 2``.

Bilinear sampling, zero padding, ``align_corners=False`` throughout. Because the map is a
scale and a shift per axis, resampling an ``H x W`` image onto a ``h x w`` grid is separable:
``A_y @ image @ A_x^T`` with the "hat" weights ``A[i, p] = max(0, 1 - |coord_i - p|)``.
Placement uses those two small matrix products (2.9x faster than ``grid_sample`` here);
extraction uses ``grid_sample`` (faster in that direction) on a grid built per axis.

- :func:`glimpse`  ``g = ST(x, z_where)``: extract a glimpse from an image.
- :func:`place`    ``y = ST^{-1}(g, z_where)``: draw a glimpse onto a canvas (the inverse);
  :func:`placement_weights` its two matrices; :func:`resampling_matrix` a glimpse at another
  resolution.
- :func:`aligned_window`: the shift (and scale) that best draws a glimpse over an image
  (Gauss-Newton).
- :func:`centre_of_mass` / :func:`centred`: a glimpse's centre of mass, and the transform that
  draws it there at the window's centre.
- :func:`where_to_transform`: the latent (unconstrained) z_where to ``(s_x, s_y, t_x, t_y)``.
- :func:`z_where_to_boxes` / :func:`boxes_to_z_where`: the one place that converts between
  ``z_where`` and pixel boxes ``(x, y, width, height)``.

Both transforms run in float32 under mixed precision (:mod:`sqair_pyro.nn.precision`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sqair_pyro.nn.precision import full_precision


def _pixel_centres(n: int, like: torch.Tensor) -> torch.Tensor:
    """Normalised coordinates of the centres of ``n`` pixels: ``(2 i + 1) / n - 1``."""
    return (2 * torch.arange(n, dtype=like.dtype, device=like.device) + 1) / n - 1


def _hat_weights(coords: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear weights of source pixels ``0..size-1`` for normalised source ``coords``.

    ``coords`` (..., n) in ``[-1, 1]`` units of a ``size``-pixel axis; returns (..., n, size).
    Pixels outside the axis get no weight (zero padding).
    """
    pixel = ((coords + 1) * size - 1) / 2  # continuous pixel index
    grid = torch.arange(size, dtype=coords.dtype, device=coords.device)
    return torch.relu(1 - (pixel.unsqueeze(-1) - grid).abs())


@full_precision
def glimpse(images: torch.Tensor, z_where: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Extract glimpses ``g = ST(x, z_where)`` (paper Alg. 2 line 7, Alg. 3 line 10).

    Uses ``grid_sample`` (measured 2.3x faster than the separable products here for
    extraction, forward and backward); it computes the same bilinear weights. Its sampling
    grid is built from the scale and shift of each axis directly: ``affine_grid`` multiplies
    a full 2x3 matrix into every grid point, a batched product of tiny matrices that took 4-5x
    longer forward and backward on 700 glimpses (docs/results.md, "Evaluation under
    training's numerics").

    :param images: ``(*batch, H, W)`` images.
    :param z_where: ``(*batch, 4)`` as ``(s_x, s_y, t_x, t_y)``; batch dims broadcast.
    :param size: glimpse ``(height, width)``, e.g. ``(20, 20)`` or ``(28, 12)``.
    :returns: ``(*batch, height, width)`` glimpses.
    """
    batch = torch.broadcast_shapes(images.shape[:-2], z_where.shape[:-1])
    height, width = size
    n = batch.numel()
    sx, sy, tx, ty = z_where.expand(*batch, 4).reshape(n, 4, 1).unbind(-2)  # each (n, 1)
    # Canvas coordinates of every glimpse pixel centre: x = s u + t, per axis.
    xs = (sx * _pixel_centres(width, z_where) + tx).unsqueeze(-2).expand(n, height, width)
    ys = (sy * _pixel_centres(height, z_where) + ty).unsqueeze(-1).expand(n, height, width)
    grid = torch.stack([xs, ys], dim=-1)
    flat = images.expand(*batch, *images.shape[-2:]).reshape(n, 1, *images.shape[-2:])
    return F.grid_sample(flat, grid, align_corners=False).view(*batch, *size)


@full_precision
def place(glimpses: torch.Tensor, z_where: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Draw glimpses on an empty canvas, ``y = ST^{-1}(g, z_where)`` (paper Alg. 1 line 5).

    :param glimpses: ``(*batch, h, w)`` decoded glimpses.
    :param z_where: ``(*batch, 4)`` as ``(s_x, s_y, t_x, t_y)``; ``s`` must be non-zero.
    :param size: canvas ``(H, W)``.
    :returns: ``(*batch, H, W)`` canvases, zero outside each glimpse's window.
    """
    b_y, b_x = placement_weights(z_where, tuple(glimpses.shape[-2:]), size)
    return b_y @ glimpses @ b_x.transpose(-1, -2)


def placement_weights(
    z_where: torch.Tensor, glimpse_size: tuple[int, int], size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two matrices of :func:`place`: ``ST^{-1}(g, z_where) = B_y g B_x^T``.

    :returns: ``B_y`` ``(*batch, H, h)`` and ``B_x`` ``(*batch, W, w)``, the bilinear weights
        of each glimpse pixel at each canvas pixel centre (placement is linear in ``g``).
    """
    height, width = size
    sx, sy, tx, ty = z_where.unbind(-1)
    # Glimpse coordinates of every canvas pixel centre: u = (x - t) / s.
    vs = (_pixel_centres(height, z_where) - ty.unsqueeze(-1)) / sy.unsqueeze(-1)  # (*batch, H)
    us = (_pixel_centres(width, z_where) - tx.unsqueeze(-1)) / sx.unsqueeze(-1)  # (*batch, W)
    return _hat_weights(vs, glimpse_size[0]), _hat_weights(us, glimpse_size[1])


@full_precision
def aligned_window(
    z_where: torch.Tensor,
    glimpse: torch.Tensor,
    image: torch.Tensor,
    steps: int,
    fit_scale: bool = False,
    max_step_px: float = 2.0,
    max_scale_step: float = 0.1,
    damping: float = 1e-4,
) -> torch.Tensor:
    """The window that best draws ``glimpse`` over ``image``, from ``steps`` Gauss-Newton
    steps (Lucas and Kanade 1981) on ``min ||B_y g B_x^T - x||^2`` from ``z_where``: over its
    shift ``t``, and with ``fit_scale`` over its scale ``s`` too.

    Each step solves the normal equations ``(J^T J + damping I) d = -J^T r`` (2x2, or 4x4
    with the scale) with the Jacobian ``J`` of the drawing by finite differences of the
    separable weights (exact in the shift, the weights being piecewise linear in it away from
    their kinks; first order in the scale), and moves each shift by at most ``max_step_px``
    pixels and each scale by at most ``max_scale_step`` of itself (kept in ``(0.01, 0.99)``,
    where the latent's sigmoid can reach). No gradient flows through it.

    :param z_where: ``(*batch, 4)`` as ``(s_x, s_y, t_x, t_y)``.
    :param glimpse: ``(*batch, h, w)``.
    :param image: ``(*batch, H, W)``, of the glimpse's dtype and device.
    :returns: the window ``(*batch, 4)``; its scale is ``z_where``'s unless ``fit_scale``.
    """
    height, width = image.shape[-2:]
    size = tuple(glimpse.shape[-2:])
    free = [0, 1, 2, 3] if fit_scale else [2, 3]
    with torch.no_grad():
        where = z_where.to(image.dtype).clone()
        units = torch.eye(4, dtype=where.dtype, device=where.device)
        identity = torch.eye(len(free), dtype=where.dtype, device=where.device)
        shift_limit = where.new_tensor([2 * max_step_px / width, 2 * max_step_px / height])
        for _ in range(steps):
            scale_limit = max_scale_step * where[..., :2]
            limit = torch.cat([scale_limit, shift_limit.expand_as(scale_limit)], -1)[..., free]
            b_y, b_x = placement_weights(where, size, (height, width))
            drawn_x = glimpse @ b_x.transpose(-1, -2)  # (*batch, h, W)
            residual = b_y @ drawn_x - image
            columns = []
            for j, k in enumerate(free):  # the drawing's derivative in each free coordinate
                eps = 1e-3 * limit[..., j, None]  # per row: (*batch, 1)
                moved_y, moved_x = placement_weights(where + eps * units[k], size, (height, width))
                if k % 2 == 0:  # an x coordinate moves B_x
                    column = b_y @ glimpse @ ((moved_x - b_x) / eps[..., None]).transpose(-1, -2)
                else:
                    column = ((moved_y - b_y) / eps[..., None]) @ drawn_x
                columns.append(column.flatten(-2))
            jac = torch.stack(columns, -1)  # (*batch, P, free)
            normal = jac.transpose(-1, -2) @ jac + damping * identity
            gradient = jac.transpose(-1, -2) @ residual.flatten(-2).unsqueeze(-1)
            step = -torch.linalg.solve(normal, gradient).squeeze(-1)
            step = step.clamp(-limit, limit)
            where[..., free] = where[..., free] + step
            if fit_scale:
                where[..., :2] = where[..., :2].clamp(0.01, 0.99)
    return where


def centre_of_mass(glimpses: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``c = sum_u g(u) u / sum_u g(u)``: the centre of mass of each glimpse (..., h, w) in its
    own normalised coordinates ``(u_x, u_y)``, (..., 2); ``(0, 0)`` is the glimpse's centre.
    Intensities must be non-negative; an empty glimpse (mass below ``eps``) has its centre
    at ``(0, 0)``."""
    height, width = glimpses.shape[-2:]
    mass = glimpses.sum((-2, -1))
    u_x = (glimpses.sum(-2) * _pixel_centres(width, glimpses)).sum(-1)
    u_y = (glimpses.sum(-1) * _pixel_centres(height, glimpses)).sum(-1)
    centre = torch.stack([u_x, u_y], -1) / mass.clamp(min=eps).unsqueeze(-1)
    return torch.where((mass > eps).unsqueeze(-1), centre, torch.zeros_like(centre))


def centred(transform: torch.Tensor, glimpses: torch.Tensor) -> torch.Tensor:
    """The transform ``(s_x, s_y, t_x - s_x c_x, t_y - s_y c_y)`` that draws each glimpse
    with its :func:`centre_of_mass` ``c`` at the centre ``t`` of the window ``transform``
    (..., 4) describes, its scale kept; glimpses (..., h, w) broadcast with it."""
    offset = transform[..., :2] * centre_of_mass(glimpses)
    return torch.cat([transform[..., :2], transform[..., 2:] - offset], dim=-1)


def resampling_matrix(old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """``R`` of shape ``(new_h * new_w, old_h * old_w)``: a glimpse of ``old`` pixels (flattened)
    resampled to ``new`` pixels, ``g_new = R g_old``, bilinearly at the new pixel centres on
    the same window (edge pixels repeat, so each row sums to 1)."""

    def axis(n_new: int, n_old: int) -> torch.Tensor:
        weights = _hat_weights(_pixel_centres(n_new, torch.zeros(())), n_old)
        return weights / weights.sum(-1, keepdim=True)

    return torch.kron(axis(new[0], old[0]), axis(new[1], old[1]))


def where_to_transform(z_where: torch.Tensor) -> torch.Tensor:
    """The transformer's ``(s_x, s_y, t_x, t_y)`` from an unconstrained latent z_where.

    The latent is Gaussian in the models; scales go through a sigmoid (so a glimpse is never
    larger than the canvas nor of zero size), shifts are used as they are.
    """
    return torch.cat([torch.sigmoid(z_where[..., :2]), z_where[..., 2:]], dim=-1)


def z_where_to_boxes(z_where: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pixel boxes ``(x, y, width, height)`` of the windows that ``z_where`` describes.

    :param z_where: ``(..., 4)``; :param size: canvas ``(H, W)``. Boxes are not clipped.
    """
    height, width = size
    sx, sy, tx, ty = z_where.unbind(-1)
    box_w, box_h = sx * width, sy * height
    x = (tx + 1) * width / 2 - box_w / 2
    y = (ty + 1) * height / 2 - box_h / 2
    return torch.stack([x, y, box_w, box_h], dim=-1)


def boxes_to_z_where(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`z_where_to_boxes`: pixel ``(x, y, width, height)`` to ``z_where``."""
    height, width = size
    x, y, box_w, box_h = boxes.unbind(-1)
    sx, sy = box_w / width, box_h / height
    tx = 2 * (x + box_w / 2) / width - 1
    ty = 2 * (y + box_h / 2) / height - 1
    return torch.stack([sx, sy, tx, ty], dim=-1)
