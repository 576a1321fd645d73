"""The spatial transformer: agreement with grid_sample, inverse pairs, boxes, gradients."""

import pytest
import torch
import torch.nn.functional as F

from sqair_pyro.nn.spatial_transformer import (
    boxes_to_z_where,
    glimpse,
    place,
    placement_weights,
    resampling_matrix,
    z_where_to_boxes,
)


def _theta(z_where: torch.Tensor) -> torch.Tensor:
    sx, sy, tx, ty = z_where.unbind(-1)
    zero = torch.zeros_like(sx)
    return torch.stack([sx, zero, tx, zero, sy, ty], -1).view(-1, 2, 3)


def _random_z_where(n: int, generator: torch.Generator) -> torch.Tensor:
    scale = 0.2 + 0.7 * torch.rand(n, 2, generator=generator, dtype=torch.float64)
    shift = 2.4 * torch.rand(n, 2, generator=generator, dtype=torch.float64) - 1.2
    return torch.cat([scale, shift], -1)


def _bilinear_reference(image, ys, xs):
    """Bilinear sampling with zero padding at pixel coordinates, one point at a time."""
    out = torch.zeros(len(ys), len(xs), dtype=image.dtype)
    height, width = image.shape
    for i, y in enumerate(ys.tolist()):
        for j, x in enumerate(xs.tolist()):
            for py in range(height):
                for px in range(width):
                    w = max(0.0, 1 - abs(y - py)) * max(0.0, 1 - abs(x - px))
                    if w:
                        out[i, j] += w * image[py, px]
    return out


@pytest.mark.parametrize("size", [(6, 6), (7, 3)])
def test_glimpse_is_bilinear_sampling_at_the_mapped_pixel_centres(size):
    """Glimpse pixel centre u maps to canvas s * u + t (normalised, align_corners=False)."""
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(9, 8, generator=gen, dtype=torch.float64)
    z_where = torch.tensor([[0.7, 0.45, 0.2, -0.35]], dtype=torch.float64)
    h, w = size
    u_y = (2 * torch.arange(h, dtype=torch.float64) + 1) / h - 1
    u_x = (2 * torch.arange(w, dtype=torch.float64) + 1) / w - 1
    ys = ((0.45 * u_y - 0.35 + 1) * 9 - 1) / 2  # canvas pixel coordinates
    xs = ((0.7 * u_x + 0.2 + 1) * 8 - 1) / 2
    expected = _bilinear_reference(image, ys, xs)
    torch.testing.assert_close(glimpse(image[None], z_where, size)[0], expected)


def test_glimpse_equals_grid_sample_on_affine_grid():
    """The per-axis grid is affine_grid's, values and gradients (float64, 1e-10), broadcast
    over a (4, 3) batch of objects on 4 images, glimpses wider than tall."""
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(4, 1, 50, 50, generator=gen, dtype=torch.float64)
    z_where = _random_z_where(12, gen).view(4, 3, 4).requires_grad_()
    got = glimpse(images.squeeze(1)[:, None], z_where, (7, 11))
    grid = F.affine_grid(_theta(z_where), [12, 1, 7, 11], align_corners=False)
    flat = images.expand(4, 3, 50, 50).reshape(12, 1, 50, 50)
    expected = F.grid_sample(flat, grid, align_corners=False).view(4, 3, 7, 11)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)
    weights = torch.rand(4, 3, 7, 11, generator=gen, dtype=torch.float64)
    (grad_got,) = torch.autograd.grad((got * weights).sum(), z_where)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), z_where)
    torch.testing.assert_close(grad_got, grad_expected, atol=1e-10, rtol=0)
    assert grad_got.abs().sum() > 0


def test_place_equals_grid_sample_with_inverse_transform():
    """Placement is grid_sample with the inverse affine map x -> (x - t) / s."""
    gen = torch.Generator().manual_seed(1)
    glimpses = torch.rand(16, 28, 12, generator=gen, dtype=torch.float64)
    z_where = _random_z_where(16, gen)
    sx, sy, tx, ty = z_where.unbind(-1)
    inverse = torch.stack([1 / sx, 1 / sy, -tx / sx, -ty / sy], -1)
    grid = F.affine_grid(_theta(inverse), [16, 1, 50, 50], align_corners=False)
    expected = F.grid_sample(glimpses[:, None], grid, align_corners=False)[:, 0]
    torch.testing.assert_close(place(glimpses, z_where, (50, 50)), expected, atol=1e-10, rtol=0)


def test_place_then_glimpse_returns_the_glimpse_on_the_pixel_grid():
    """A 20x20 glimpse placed 1:1 on whole pixels comes back exactly (float64, 1e-10)."""
    gen = torch.Generator().manual_seed(2)
    g = torch.rand(8, 20, 20, generator=gen, dtype=torch.float64)
    corners = torch.randint(0, 30, (8, 2), generator=gen).double()
    boxes = torch.cat([corners, torch.full((8, 2), 20.0, dtype=torch.float64)], -1)
    z_where = boxes_to_z_where(boxes, (50, 50))
    canvas = place(g, z_where, (50, 50))
    torch.testing.assert_close(glimpse(canvas, z_where, (20, 20)), g, atol=1e-10, rtol=0)


def test_place_then_glimpse_is_close_for_a_magnified_smooth_glimpse():
    """Magnified 2x and read back, a smooth glimpse is kept within 0.02 (bilinear blur)."""
    u = torch.linspace(-1, 1, 20)
    g = torch.exp(-(u[:, None] ** 2 + u[None, :] ** 2) * 2).expand(4, 20, 20)
    z_where = torch.tensor([[0.8, 0.8, 0.0, 0.0], [0.8, 0.6, 0.1, -0.2]]).repeat(2, 1)
    back = glimpse(place(g, z_where, (50, 50)), z_where, (20, 20))
    assert (back - g).abs().max() < 0.02


def test_glimpse_outside_the_canvas_is_zero():
    images = torch.ones(2, 50, 50)
    z_where = torch.tensor([[0.3, 0.3, 3.0, 0.0], [0.3, 0.3, 0.0, -3.0]])
    assert glimpse(images, z_where, (20, 20)).abs().max() == 0


def test_broadcasting_over_objects():
    """One image per batch element, several objects: batch dims broadcast."""
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(5, 50, 50, generator=gen)
    z_where = _random_z_where(15, gen).float().view(5, 3, 4)
    out = glimpse(images.unsqueeze(1), z_where, (20, 20))
    assert out.shape == (5, 3, 20, 20)
    torch.testing.assert_close(out[:, 1], glimpse(images, z_where[:, 1], (20, 20)))


def test_boxes_round_trip():
    gen = torch.Generator().manual_seed(4)
    boxes = torch.rand(100, 4, generator=gen, dtype=torch.float64) * 40 + 1
    back = z_where_to_boxes(boxes_to_z_where(boxes, (50, 60)), (50, 60))
    torch.testing.assert_close(back, boxes, atol=1e-10, rtol=0)
    z = torch.tensor([[0.4, 0.2, 0.0, 0.0]])
    torch.testing.assert_close(z_where_to_boxes(z, (50, 50)), torch.tensor([[15.0, 20, 20, 10]]))


def test_gradients_flow_to_z_where():
    gen = torch.Generator().manual_seed(5)
    images = torch.rand(3, 50, 50, generator=gen, dtype=torch.float64)
    z_where = torch.tensor(
        # Off the pixel grid, so finite differences do not straddle the kinks of bilinear.
        [
            [0.413, 0.387, 0.1032, 0.0071],
            [0.5123, 0.3061, -0.3013, 0.2047],
            [0.2191, 0.61, 0.053, -0.1],
        ],
        dtype=torch.float64,
        requires_grad=True,
    )
    glimpses = torch.rand(3, 20, 20, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: glimpse(images, z, (20, 20)), (z_where,))
    assert torch.autograd.gradcheck(lambda z: place(glimpses, z, (50, 50)), (z_where,))
    place(glimpses, z_where, (50, 50)).sum().backward()
    assert (z_where.grad.abs().sum(-1) > 0).all()


def test_resampling_a_glimpse_keeps_constants_and_is_the_identity_at_its_own_size():
    """``resampling_matrix``: rows of convex weights (a constant glimpse stays constant), the
    identity at the same size, and a linear ramp along x stays a ramp at the new pixel
    centres (bilinear, away from the repeated edge pixels)."""
    matrix = resampling_matrix((20, 12), (28, 16))
    assert matrix.shape == (28 * 16, 20 * 12) and (matrix >= 0).all()
    torch.testing.assert_close(matrix.sum(-1), torch.ones(28 * 16))
    torch.testing.assert_close(resampling_matrix((5, 7), (5, 7)), torch.eye(35))
    ramp = torch.arange(12.0).expand(20, 12)  # value = pixel column
    resampled = (matrix @ ramp.flatten()).view(28, 16)
    columns = (torch.arange(16) + 0.5) * 12 / 16 - 0.5  # new centres in old pixel units
    inner = (columns >= 0) & (columns <= 11)
    torch.testing.assert_close(resampled[:, inner], columns[inner].expand(28, -1))


def test_placement_weights_are_the_two_factors_of_place():
    generator = torch.Generator().manual_seed(0)
    z_where = _random_z_where(6, generator)
    glimpses = torch.rand(6, 9, 5, generator=generator, dtype=torch.float64)
    b_y, b_x = placement_weights(z_where, (9, 5), (30, 40))
    assert b_y.shape == (6, 30, 9) and b_x.shape == (6, 40, 5)
    torch.testing.assert_close(
        b_y @ glimpses @ b_x.transpose(-1, -2), place(glimpses, z_where, (30, 40))
    )


def _blob(n: int) -> torch.Tensor:
    """``n`` smooth 20x20 glimpses: a Gaussian blob of sd 3 px in the middle."""
    yy, xx = torch.meshgrid(torch.arange(20.0), torch.arange(20.0), indexing="ij")
    return torch.exp(-((yy - 9.5) ** 2 + (xx - 9.5) ** 2) / 18).expand(n, 20, 20)


def test_aligned_window_finds_where_a_glimpse_was_drawn():
    """Gauss-Newton from 0.5-1.5 px off (1 px = 0.04 on a 50 px canvas) finds the shift a
    smooth glimpse was drawn at within 1e-4 px in 3 steps, keeping the scale; 0 steps keep the
    start; a glimpse 5 px off moves at most ``max_step_px`` per step; a blank glimpse (nothing
    to align) and a window already in place stay where they are; every tensor it makes is on
    the image's device (the meta device stands in for a GPU, past the precision wrapper)."""
    from sqair_pyro.nn.spatial_transformer import aligned_window

    true = torch.tensor([[0.4, 0.4, 0.1, -0.2], [0.3, 0.5, -0.3, 0.3], [0.5, 0.4, 0.0, 0.0]])
    image = place(_blob(3), true, (50, 50))
    start = true.clone()
    start[:, 2:] += torch.tensor([[0.05, -0.03], [-0.04, 0.06], [0.03, 0.02]])
    torch.testing.assert_close(aligned_window(start, _blob(3), image, 0), start)
    torch.testing.assert_close(aligned_window(start, _blob(3), image, 3), true,
                               atol=4e-6, rtol=0)  # fmt: skip
    far = true.clone()
    far[:, 2] += 0.2  # 5 px
    moved = aligned_window(far, _blob(3), image, 1, max_step_px=2.0) - far
    assert moved[:, 2].abs().max() <= 0.08 + 1e-6 and (moved[:, 2] < 0).all()
    blank = torch.zeros(3, 20, 20)
    torch.testing.assert_close(aligned_window(start, blank, image, 2), start)
    torch.testing.assert_close(aligned_window(true, _blob(3), image, 2), true,
                               atol=1e-6, rtol=0)  # fmt: skip
    on_meta = [x.to("meta") for x in (start, _blob(3), image)]
    for fit_scale in (False, True):
        assert aligned_window.__wrapped__(*on_meta, 2, fit_scale).device.type == "meta"
    # No rows (no object alive in a slot): nothing to align, no error.
    assert aligned_window(start[:0], _blob(0), image[:0], 2, True).shape == (0, 4)


def test_aligned_window_fits_the_scale_when_asked():
    """With ``fit_scale`` a window 15% too wide and 10% too short and 1 px off finds the
    scale and shift the glimpse was drawn at (to 1e-3 of the scale, 0.05 px) in 8 steps;
    without it the scale is left as it was; each step moves a scale by at most
    ``max_scale_step`` of itself; each row's fit is its own (the same alone as in a batch,
    also of more than one batch dimension)."""
    from sqair_pyro.nn.spatial_transformer import aligned_window

    true = torch.tensor([[0.4, 0.4, 0.1, -0.2], [0.3, 0.5, -0.3, 0.3]])
    image = place(_blob(2), true, (50, 50))
    start = true * torch.tensor([1.15, 0.9, 1.0, 1.0]) + torch.tensor([0.0, 0.0, 0.04, -0.04])
    fitted = aligned_window(start, _blob(2), image, 8, fit_scale=True)
    torch.testing.assert_close(fitted[:, :2], true[:, :2], atol=1e-3 * 0.3, rtol=0)
    torch.testing.assert_close(fitted[:, 2:], true[:, 2:], atol=0.002, rtol=0)
    shift_only = aligned_window(start, _blob(2), image, 8)
    torch.testing.assert_close(shift_only[:, :2], start[:, :2])
    one = aligned_window(start, _blob(2), image, 1, fit_scale=True, max_scale_step=0.05)
    assert ((one[:, :2] - start[:, :2]).abs() <= 0.05 * start[:, :2] + 1e-6).all()
    assert not torch.allclose(one[:, :2], start[:, :2])
    alone = aligned_window(start[:1], _blob(1), image[:1], 3, fit_scale=True)
    batched = aligned_window(start, _blob(2), image, 3, fit_scale=True)
    torch.testing.assert_close(alone, batched[:1], atol=0, rtol=0)
    grid = aligned_window(start.expand(3, 2, 4), _blob(2).expand(3, 2, 20, 20),
                          image.expand(3, 2, 50, 50), 3, fit_scale=True)  # fmt: skip
    torch.testing.assert_close(grid, batched.expand(3, 2, 4), atol=0, rtol=0)


def test_centre_of_mass_and_the_centred_drawing():
    """The centre of mass of a glimpse with one lit pixel is that pixel's centre in the
    glimpse's normalised coordinates, of two pixels their weighted mean, of an empty glimpse
    (0, 0); drawn through :func:`centred` a glimpse's mass lands with its centre on the
    window's centre (to 1e-3 of the half-canvas, 0.025 px: placement samples the glimpse at
    the canvas's pixels, it does not integrate it), wherever it sits in the glimpse,
    while the plain window draws it off centre by ``s c``; the scale is kept."""
    from sqair_pyro.nn.spatial_transformer import centre_of_mass, centred

    g = torch.zeros(3, 10, 8)
    g[0, 2, 5] = 1.0  # row 2, column 5
    g[1, 2, 5], g[1, 6, 1] = 3.0, 1.0
    expected = torch.tensor([[(2 * 5 + 1) / 8 - 1, (2 * 2 + 1) / 10 - 1],
                             [(3 * 11 / 8 + 3 / 8) / 4 - 1, (3 * 5 / 10 + 13 / 10) / 4 - 1],
                             [0.0, 0.0]])  # fmt: skip
    torch.testing.assert_close(centre_of_mass(g), expected)
    yy, xx = torch.meshgrid(torch.arange(20.0), torch.arange(20.0), indexing="ij")
    off = torch.exp(-((yy - 12.5) ** 2 + (xx - 5.5) ** 2) / 8).expand(2, 20, 20)
    window = torch.tensor([[0.4, 0.5, 0.1, -0.2], [0.3, 0.3, -0.3, 0.3]])
    for transform, moved in ((centred(window, off), False), (window, True)):
        canvas = place(off, transform, (50, 50))
        drawn = centre_of_mass(canvas)
        target = window[:, 2:] + (window[:, :2] * centre_of_mass(off) if moved else 0)
        torch.testing.assert_close(drawn, target, atol=1e-3, rtol=0)
    assert (centre_of_mass(off).abs() > 0.2).all()
    torch.testing.assert_close(centred(window, off)[:, :2], window[:, :2])
