"""Networks on the rows that hold objects only (sqair_pyro.nn.rows) give the dense results."""

import pytest
import torch
from torch import nn

from sqair_pyro.models.likelihood import AdditiveSTLikelihood
from sqair_pyro.nn.modules import GlimpseDecoderMLP, GlimpseDecoderSubpixel, SharedCNN
from sqair_pyro.nn.rows import Rows
from sqair_pyro.nn.spatial_transformer import glimpse, place, where_to_transform


def test_gather_broadcasts_and_scatter_fills_the_other_rows():
    mask = torch.tensor([[True, False, True], [False, False, True]])  # (K=2, B=3)
    rows = Rows(mask)
    per_datum = torch.arange(6.0).view(3, 2)  # (B, F): broadcast over particles
    gathered = rows.gather(per_datum)
    assert torch.equal(gathered, torch.tensor([[0.0, 1.0], [4.0, 5.0], [4.0, 5.0]]))
    back = rows.scatter(gathered + 100, fill=-1.0)
    assert back.shape == (2, 3, 2)
    assert torch.equal(back[mask], gathered + 100)
    assert (back[~mask] == -1).all()


def test_all_rows_selected_is_a_plain_reshape():
    rows = Rows(torch.ones(4, 2, dtype=torch.bool))
    x = torch.randn(4, 2, 5)
    assert torch.equal(rows.gather(x), x.reshape(8, 5))
    assert torch.equal(rows.scatter(rows.gather(x)), x)


def test_gradients_reach_only_the_selected_rows():
    mask = torch.tensor([True, False, True, False])
    x = torch.randn(4, 3, requires_grad=True)
    rows = Rows(mask)
    (rows.scatter(rows.gather(x) * 2.0, fill=7.0) ** 2).sum().backward()
    assert torch.allclose(x.grad[mask], 8.0 * x[mask].detach())
    assert (x.grad[~mask] == 0).all()


def test_images_gather_with_two_event_dims():
    images = torch.randn(3, 50, 50)
    rows = Rows(torch.tensor([[False, True, False]]).expand(2, 3))
    assert torch.equal(rows.gather(images, event_dims=2), images[1].expand(2, 50, 50))


@pytest.mark.parametrize(
    "network",
    [
        lambda: nn.GRUCell(6, 4),
        lambda: SharedCNN([4, 8], [2, 1]),
        lambda: GlimpseDecoderMLP(6, [8], (5, 5)),
        lambda: GlimpseDecoderSubpixel(6, [8, 16], (2, 2), [4], [2], (4, 4)),
    ],
)
def test_networks_accept_zero_rows(network):
    """Forward and backward: a batch in which no object is present reaches the decoder as zero
    rows (PyTorch's own pixel-shuffle backward fails there)."""
    net = network()
    x = torch.zeros(0, 6) if not isinstance(net, SharedCNN) else torch.zeros(0, 12, 12)
    out = net(x, torch.zeros(0, 4)) if isinstance(net, nn.GRUCell) else net(x)
    assert out.shape[0] == 0
    out.sum().backward()
    assert all(p.grad is not None and (p.grad == 0).all() for p in net.parameters())
    one = net(
        x[:1].new_zeros(1, *x.shape[1:]), *([torch.zeros(1, 4)] * isinstance(net, nn.GRUCell))
    )
    assert out.shape[1:] == one.shape[1:]


def test_glimpse_of_no_objects_is_empty():
    out = glimpse(torch.zeros(0, 50, 50), torch.zeros(0, 4), (20, 20))
    assert out.shape == (0, 20, 20)


def test_render_on_present_slots_equals_the_dense_sum():
    """Alg. 1 computed for every slot and masked by z_pres, against the row-restricted render."""
    torch.manual_seed(0)
    decoder = GlimpseDecoderMLP(6, [16], (8, 8))
    likelihood = AdditiveSTLikelihood(decoder, (20, 24), obs_sd=0.3)
    z_what, z_where = torch.randn(5, 4, 3, 6), torch.randn(5, 4, 3, 4)
    z_pres = (torch.rand(5, 4, 3, 1) < 0.4).float()
    z_pres[0] = 0.0  # a datum with no object at all
    dense = place(decoder(z_what), where_to_transform(z_where), (20, 24))
    dense = (dense * z_pres.unsqueeze(-1)).sum(-3)
    assert torch.allclose(likelihood.render(z_what, z_where, z_pres), dense, atol=1e-6)
    empty = likelihood.render(z_what, z_where, torch.zeros_like(z_pres))
    assert empty.shape == (5, 4, 20, 24) and (empty == 0).all()


@pytest.mark.parametrize("lead", [(3,), (1, 3), (2, 1), ()])
def test_gather_of_a_broadcast_value_picks_its_own_rows(lead):
    """A value broadcast over some leading dims is gathered without the full-size copy; the
    rows and the gradients equal those of gathering the expanded value."""
    torch.manual_seed(1)
    mask = torch.rand(2, 3) < 0.5
    mask[0, 0] = True  # some rows selected, not all
    mask[1, 2] = False
    rows = Rows(mask)
    value = torch.randn(*lead, 4, 5, requires_grad=True)
    dense = value.expand(2, 3, 4, 5).reshape(6, 4, 5)[mask.reshape(-1)]
    gathered = rows.gather(value, event_dims=2)
    assert torch.equal(gathered, dense)
    weights = torch.randn_like(dense)
    (grad,) = torch.autograd.grad((gathered * weights).sum(), value)
    (expected,) = torch.autograd.grad((dense * weights).sum(), value)
    assert torch.allclose(grad, expected, atol=1e-6)


def test_scatter_sum_equals_scatter_then_sum_over_the_last_leading_dim():
    torch.manual_seed(2)
    mask = torch.rand(4, 2, 3) < 0.4
    mask[0] = False  # a datum with no selected slot
    rows = Rows(mask)
    values = torch.randn(rows.count, 6, 7, requires_grad=True)
    total = rows.scatter_sum(values)
    dense = rows.scatter(values).sum(2)
    assert total.shape == (4, 2, 6, 7)
    assert torch.allclose(total, dense, atol=1e-6)
    assert (total[0] == 0).all()
    weights = torch.randn_like(dense)
    (grad,) = torch.autograd.grad((total * weights).sum(), values)
    (expected,) = torch.autograd.grad((dense * weights).sum(), values)
    assert torch.allclose(grad, expected, atol=1e-6)
    assert Rows(torch.zeros(3, 0, dtype=torch.bool)).scatter_sum(torch.zeros(0, 2)).shape == (3, 2)
