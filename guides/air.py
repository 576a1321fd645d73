"""The inference network of AIR (Eslami et al., 2016; SQAIR paper Eq. 2, Fig. 2 left).

An RNN attends to the image one object at a time; each step infers
``z_pres^i``, then ``z_where^i``, extracts a glimpse there and infers ``z_what^i``::

    e = h^enc(x)                                             encode the image once
    for i < N:
        w^i, h^i = R^D(e, l, z_what^{i-1}, z_where^{i-1}, z_pres^{i-1}, h^{i-1})
        z_pres^i  ~ Bernoulli(f(w^i) * z_pres^{i-1})          stop at the first absent object
        z_where^i ~ N(g(w^i))
        z_what^i  ~ N(k(h^glimpse(ST(x, z_where^i)), w^i))

SQAIR's discovery (paper Alg. 3) is the same RNN with ``l``, a summary of the objects
already propagated to this frame, as an extra input; AIR has no such objects (``l`` empty).
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from sqair_pyro.models.air import as_sequences
from sqair_pyro.models.likelihood import draw, drawing_transform
from sqair_pyro.models.state import SlotStack
from sqair_pyro.nn.modules import BernoulliHead, Borrowed, GaussianHead, bcat
from sqair_pyro.nn.rows import Rows
from sqair_pyro.nn.spatial_transformer import aligned_window, glimpse, where_to_transform


def baseline_options(
    baseline: nn.Module | None, frame: torch.Tensor, slot: int, num_slots: int
) -> dict:
    """``infer`` options of a presence site for TraceGraph_ELBO's learned (NVIL) baseline.

    The baseline sees the frame and which slot is deciding; VIMCO needs no baseline.
    """
    if baseline is None:
        return {}
    slot_code = frame.new_zeros(*frame.shape[:-2], num_slots)
    slot_code[..., slot] = 1
    inputs = torch.cat([frame.flatten(-2), slot_code], dim=-1).detach()
    return {"baseline": {"nn_baseline": baseline, "nn_baseline_input": inputs}}


def residual(image: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
    """``max(0, x - y_{<i})``: what the objects drawn so far (``drawn``, Alg. 1's canvas of
    objects ``j < i``) leave unexplained in the image. DAIR's discovery reads its encoding
    (Eslami et al. 2016, Sec. 3.1); SQAIR's propagation may read its glimpses from it
    (guides/sqair.py, a departure from the paper)."""
    return (image - drawn).clamp(min=0)


def shift_aligned(
    loc: torch.Tensor, template: torch.Tensor, frame: torch.Tensor, steps: int, centre: bool
) -> torch.Tensor:
    """The window ``loc`` (..., 4, unconstrained z_where) with its shift moved by ``steps``
    Gauss-Newton steps (:func:`aligned_window`) to where ``template`` (..., h, w), drawn as
    the model draws it (``centre``: :func:`~sqair_pyro.models.likelihood.drawing_transform`),
    best draws ``frame`` (..., H, W); its scale is kept. The move is taken without gradient:
    ``loc``'s own gradient passes unchanged, the template's and the frame's are cut."""
    with torch.no_grad():
        drawing = drawing_transform(template, loc, centre)
        moved = aligned_window(drawing, template, frame, steps)
        shift = moved[..., 2:] - drawing[..., 2:]
    return loc + torch.cat([torch.zeros_like(shift), shift], -1)


class DiscoveryRNN(nn.Module):
    """``q^D``: the AIR-style RNN over free object slots (Eq. 2; SQAIR Alg. 3 lines 5-13)."""

    def __init__(
        self,
        glimpse_encoder: nn.Module,
        input_dim: int,
        max_objects: int,
        z_what_dim: int,
        hidden: int,
        glimpse_size: tuple[int, int],
        where_init: torch.Tensor,
        pres_bias: float = 1.0,
        what_scale_offset: float = 0.0,
        extra_dim: int = 0,
        centre_glimpses: bool = False,
    ) -> None:
        """``centre_glimpses``: the model draws each glimpse with its centre of mass at its
        window's centre, and :attr:`reads_difference` draws them so too."""
        super().__init__()
        self.centre_glimpses = centre_glimpses
        self.max_objects = max_objects
        self.z_what_dim = z_what_dim
        self.glimpse_size = glimpse_size
        self.glimpse_encoder = glimpse_encoder
        # Inputs: [context, z_what, z_where, z_pres, extra]; AIR's are a prefix of SQAIR's.
        self.rnn = nn.RNNCell(input_dim + z_what_dim + 4 + 1 + extra_dim, hidden)
        self.pres_head = BernoulliHead(hidden, [hidden], bias=pres_bias)
        self.where_head = GaussianHead(
            hidden, 4, [hidden], scale_offset=-3.0, min_scale=0.01, loc_init=where_init
        )
        self.what_head = GaussianHead(
            glimpse_encoder.out_dim + hidden, z_what_dim, [hidden], scale_offset=what_scale_offset
        )
        # Learned baselines for TraceGraph_ELBO (NVIL, as Pyro's AIR example); VIMCO needs none.
        self.baseline: nn.Module | None = None
        #: The model's glimpse decoder, borrowed: each step after the first reads the
        #: encoding of the frame less what the objects found so far draw (DAIR; see
        #: :func:`residual`), and in SQAIR's later frames less what the propagated objects
        #: draw too; the first step reads the whole frame's encoding, as AIR's. None: AIR's
        #: reading, the same encoding at every step.
        self.reads_difference: Borrowed | None = None
        #: The model's glimpse decoder, borrowed, and the Gauss-Newton steps that move each
        #: new window onto where its object's appearance draws best (:meth:`aligned`);
        #: None: the where head's window, as the paper's.
        self.aligns_with: Borrowed | None = None
        self.align_steps = 0

    def forward(
        self,
        image: torch.Tensor,
        context: torch.Tensor,
        num_free: torch.Tensor | None,
        site: Callable[[str, int], str],
        extra: torch.Tensor | None = None,
        found: dict[str, torch.Tensor] | None = None,
        drawn: torch.Tensor | None = None,
        encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Discover up to ``N`` objects in ``image`` (..., H, W).

        :param context: (..., C) the image encoding ``e_t``.
        :param num_free: (...,) slots left for new objects (``N - P_t``); None: all ``N``.
        :param site: the sample-site name of a latent ``kind`` in slot ``i``.
        :param extra: (..., E) more conditioning, e.g. SQAIR's summary ``l_t`` of the
            propagated objects (Eq. 6); None for AIR.
        :param found: objects already in the frame (``z_pres``, ``z_where``, ``z_what`` of
            shape (..., N, ·), present ones in any slots): the RNN first steps over them as
            over objects it had found itself (:meth:`step_over`); None: none.
        :param drawn: (..., H, W) what the objects already in the frame draw, for
            :attr:`reads_difference`; None: nothing.
        :param encode: the image encoder that made ``context``, for :attr:`reads_difference`
            (which needs it).
        :returns: the stacked latents (..., N, ·) and ``features``, the glimpse encodings.
        """
        batch = context.shape[:-1]
        h = context.new_zeros(*batch, self.rnn.hidden_size)
        z_what = context.new_zeros(*batch, self.z_what_dim)
        z_where = context.new_zeros(*batch, 4)
        z_pres = context.new_ones(*batch, 1)
        if found is not None:
            h, z_what, z_where = self.step_over(found, context, extra, h, z_what, z_where)
        latents = SlotStack()
        if self.reads_difference is not None:
            if encode is None:
                raise ValueError("discovery that reads the difference needs the image encoder")
            if drawn is None:
                drawn = torch.zeros_like(image)
        for i in range(self.max_objects):
            # Slot i may hold a new object only where slot i - 1 did and, with num_free, only
            # if fewer than N - P_t were found (Eq. 8); elsewhere z_pres^i = 0 for sure, so
            # the networks run on the deciding rows only (sqair_pyro.nn.rows).
            may = z_pres if num_free is None else z_pres * (num_free > i).unsqueeze(-1)
            deciding = Rows(may[..., 0].bool())
            if self.reads_difference is None or i == 0:
                seen = deciding.gather(context)
            else:  # DAIR (Eslami et al. 2016, Sec. 3.1): h^enc(max(0, x - y_{<i}))
                seen = encode(residual(*(deciding.gather(x, event_dims=2) for x in (image, drawn))))
            inputs = [z_what, z_where, z_pres] + ([] if extra is None else [extra])
            inputs = [seen] + [deciding.gather(x) for x in inputs]
            h_rows = self.rnn(bcat(inputs), deciding.gather(h))
            h = deciding.scatter(h_rows)
            p = deciding.scatter(self.pres_head(h_rows)) * may
            z_pres = pyro.sample(
                site("z_pres", i),
                dist.Bernoulli(p).to_event(1),
                infer=baseline_options(self.baseline, image, i, self.max_objects),
            )
            present = z_pres[..., 0].bool()
            rows = Rows(present)
            h_rows = rows.gather(h)
            loc, scale = self.where_head(h_rows)
            if self.aligns_with is not None:
                frame = image if drawn is None else residual(image, drawn)
                loc = self.aligned(
                    loc, h_rows, *(rows.gather(x, event_dims=2) for x in (image, frame))
                )
            z_where = pyro.sample(
                site("z_where", i),
                dist.Normal(rows.scatter(loc), rows.scatter(scale, 1.0)).to_event(1).mask(present),
            )
            features = self.glimpse_encoder(
                glimpse(
                    rows.gather(image, event_dims=2),
                    where_to_transform(rows.gather(z_where)),
                    self.glimpse_size,
                )
            )
            loc, scale = self.what_head(bcat([features, h_rows]))
            z_what = pyro.sample(
                site("z_what", i),
                dist.Normal(rows.scatter(loc), rows.scatter(scale, 1.0)).to_event(1).mask(present),
            )
            if self.reads_difference is not None and i + 1 < self.max_objects:  # read by i + 1
                one = (z_what.unsqueeze(-2), z_where.unsqueeze(-2), z_pres.unsqueeze(-2))
                drawn = drawn + draw(
                    self.reads_difference, *one, image.shape[-2:], self.centre_glimpses
                )
            features = rows.scatter(features)
            latents.append(z_pres=z_pres, z_where=z_where, z_what=z_what, features=features)
        return latents.stacked()

    def aligned(
        self, loc: torch.Tensor, h: torch.Tensor, image: torch.Tensor, frame: torch.Tensor
    ) -> torch.Tensor:
        """``loc`` (rows, 4) with its shift moved to where the object's appearance best draws
        over ``frame`` (rows, H, W; the image less what the objects before drew, where
        discovery reads the difference, so that they do not pull the window): the what
        head's mean read from ``image`` through the where head's window (as z_what will be
        read), decoded, and :func:`shift_aligned` by ``align_steps`` Gauss-Newton steps.

        A departure from the paper, whose window comes from the where head alone. With
        centred glimpses (:func:`~sqair_pyro.models.likelihood.drawing_transform`) the
        window must sit on the digit's centre of mass to the pixel, which the where head,
        reading the whole frame's encoding, places less finely than the glimpse shows it.
        Measured (docs/results.md, "Centred glimpses"): 21-35 nats of validation bound for a
        centred MLP-SQAIR over the same run without it; uncentred, none for MLP-SQAIR and 0.4
        nats a frame for MLP-AIR.
        """
        with torch.no_grad():
            features = self.glimpse_encoder(
                glimpse(image, where_to_transform(loc), self.glimpse_size)
            )
            what, _ = self.what_head(bcat([features, h]))
            template = self.aligns_with(what)
        return shift_aligned(loc, template, frame, self.align_steps, self.centre_glimpses)

    def step_over(
        self,
        found: dict[str, torch.Tensor],
        context: torch.Tensor,
        extra: torch.Tensor | None,
        h: torch.Tensor,
        z_what: torch.Tensor,
        z_where: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The RNN's state after the objects ``found`` as if it had discovered them: for each
        present one, the step that would have decided it, with its latents as the next
        step's previous object; returns ``(h, z_what, z_where)``.

        A departure from the paper, whose discovery learns of the propagated objects only
        through the summary ``l_t`` (Eq. 6): started from an AIR, that summary is untrained,
        and the AIR's RNN, which knows not to find an object twice within a frame, found
        the propagated walkers again (docs/results.md, "Pedestrians, session 14").
        """
        one = context.new_ones(*context.shape[:-1], 1)
        for k in range(found["z_pres"].shape[-2]):
            present = found["z_pres"][..., k, :].bool()  # (..., 1)
            rows = Rows(present[..., 0])
            inputs = [context, z_what, z_where, one] + ([] if extra is None else [extra])
            stepped = self.rnn(bcat([rows.gather(x) for x in inputs]), rows.gather(h))
            h = torch.where(present, rows.scatter(stepped), h)
            z_what = torch.where(present, found["z_what"][..., k, :], z_what)
            z_where = torch.where(present, found["z_where"][..., k, :], z_where)
        return h, z_what, z_where


class AIRGuide(nn.Module):
    """``q_phi(z | x)`` of AIR: encode the image once, then the discovery RNN (App. D.2)."""

    def __init__(self, image_encoder: nn.Module, discovery: DiscoveryRNN) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.discovery = discovery

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Infer the latents of ``images``, stacked: (B, T, H, W) sequences, every frame
        on its own (B * T data, latents (..., B, T, N, ·) with per-frame identities, as
        :class:`~sqair_pyro.models.air.AIRModel`), or (B, H, W) images (latents (..., B, N, ·))."""
        pyro.module("air_guide", self)
        frames = images.flatten(0, 1) if images.dim() == 4 else images
        with pyro.plate("data", frames.shape[0], dim=-1):
            encoding = self.image_encoder(frames)  # (B, hidden), once per image
            latents = self.discovery(
                frames, encoding, None, lambda kind, i: f"{kind}_{i}", encode=self.image_encoder
            )
        latents.pop("features")
        return as_sequences(latents, *images.shape[:2]) if images.dim() == 4 else latents
