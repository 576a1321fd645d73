"""The inference network of SQAIR (paper Sec. 3, Eq. 4, App. A Alg. 2-3, App. C).

Per frame, first PROPAGATION (Alg. 2) revisits every object present at ``t - 1``, in
slot order, then DISCOVERY (Alg. 3) looks for new objects in the free slots::

    e_t = h^enc(x_t)                                                 encode the frame once
    for each object i present at t-1:                                Alg. 2
        zhat_where = z_where^i_{t-1} + 0.1 f(z_where^i_{t-1}, h^{T,i}_{t-1})   proposal location
        ehat       = h^glimpse(ST(x_t, zhat_where))                   proposal glimpse
        w^R, h^R   = R^R(ehat, z^i_{t-1}, h^{T,i}_{t-1}, z^j_t, e_t, h^R)   relation RNN, Eq. 14
        z_where^i_t ~ q(z_where | zhat_where, w^R)
        e          = h^glimpse(ST(x_t, z_where^i_t))                  final glimpse
        h^{T,i}_t  = R^T(e, z_where^i_t, w^R, h^{T,i}_{t-1})          temporal RNN, Eq. 15
        z_what^i_t ~ q(z_what | e, z_what^i_{t-1}, w^R, h^{T,i}_t)
        z_pres^i_t ~ Bernoulli(f(z_what^i_t, z_where^i_t, w^R, h^{T,i}_t)) (only if present at t-1)
      (given the model's decoder: both glimpses of object i read x_t less what objects j < i
       draw, :func:`residual`)
    l_t = sum_i z_pres^i_t MLP(z_what^i_t, z_where^i_t)              DeepSets, Eq. 6
    discover with the AIR-style RNN on [e_t, l_t], at most N - P_t objects   Alg. 3
      (``mask_propagated``: on [h^enc(x_t blacked out in the propagated windows), 0] instead)

Site names match :mod:`sqair_pyro.models.sqair` exactly.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from sqair_pyro.guides.air import DiscoveryRNN, baseline_options, residual, shift_aligned
from sqair_pyro.models.likelihood import draw
from sqair_pyro.models.state import ObjectState, SlotStack, compact
from sqair_pyro.nn.modules import MLP, BernoulliHead, Borrowed, GaussianHead, bcat
from sqair_pyro.nn.rows import Rows
from sqair_pyro.nn.spatial_transformer import glimpse, place, where_to_transform


class GatedWhatHead(nn.Module):
    """``q(z_what^i_t | ...)``: a gated update of the previous appearance.

    ``loc = z_what_{t-1} + gate * delta`` with ``gate = sigmoid(raw + gate_bias)`` and
    ``scale = softplus(raw + scale_offset)``.
    """

    def __init__(
        self, n_in: int, z_what_dim: int, gate_bias: float = 1.0, scale_offset: float = 0.0
    ) -> None:
        super().__init__()
        self.net = nn.Linear(n_in, 3 * z_what_dim)
        with torch.no_grad():  # start as "appearance as before": delta = 0
            self.net.weight[:z_what_dim].zero_()
            self.net.bias[:z_what_dim].zero_()
        self.gate_bias = gate_bias
        self.scale_offset = scale_offset

    def forward(
        self, features: torch.Tensor, previous: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        delta, gate, raw_scale = self.net(features).chunk(3, dim=-1)
        loc = previous + torch.sigmoid(gate + self.gate_bias) * delta
        return loc, nn.functional.softplus(raw_scale + self.scale_offset) + 1e-3


def unexplained(
    image: torch.Tensor, objects: dict[str, torch.Tensor], glimpse_size: tuple[int, int]
) -> torch.Tensor:
    """``x_t (1 - min(1, sum_i z_pres^i W(z_where^i)))``: the frame (..., H, W) blacked out
    inside the window ``W`` of every present object of ``objects`` (..., N, ·).

    A departure from the paper, whose discovery sees the whole frame and learns of the
    propagated objects only through their summary (Eq. 6). A SQAIR warm-started from an AIR
    learns after the first frame never to discover, and a digit that propagation loses (two
    objects end up on one digit after an overlap or an exit through the edge) then stays
    unexplained to the end (docs/results.md, "Lost digits"). In the masked frame a lost digit
    is the only thing left to find, as in the single images the AIR's discovery learnt on.
    Measured from an MLP-SQAIR trained without it: lost digit-frames 2.9% -> 0.6% at once, and
    after 1.3 CPU-hours of training with it the one-sample ELBO +61 nats, but the count 0.992
    -> 0.960 (the pair that had taken the lost digit's place stays).
    """
    z_where, z_pres = objects["z_where"], objects["z_pres"]
    ones = image.new_ones(*z_where.shape[:-1], *glimpse_size)
    windows = place(ones, where_to_transform(z_where), image.shape[-2:]) * z_pres.unsqueeze(-1)
    return image * (1 - windows.sum(-3).clamp(max=1))


class PropagationRNNs(nn.Module):
    """The networks of ``q^P`` (Alg. 2): proposal, relation RNN, temporal RNN, heads."""

    def __init__(
        self,
        glimpse_encoder: nn.Module,
        image_dim: int,
        z_what_dim: int,
        hidden: int,
        glimpse_size: tuple[int, int],
        pres_bias: float = 5.0,
        what_scale_offset: float = 0.0,
    ) -> None:
        super().__init__()
        feat, d = glimpse_encoder.out_dim, z_what_dim
        self.glimpse_size = glimpse_size
        self.glimpse_encoder = glimpse_encoder
        self.proposal = MLP([4 + hidden, hidden, 4])
        nn.init.zeros_(self.proposal[-1].weight)  # start proposing the previous location
        nn.init.zeros_(self.proposal[-1].bias)
        self.relation = nn.RNNCell(feat + d + 4 + hidden + d + 4 + image_dim, hidden)
        self.where_head = GaussianHead(hidden, 4, [], scale_offset=-3.0, min_scale=0.01)
        nn.init.zeros_(self.where_head.net[-1].weight)
        nn.init.zeros_(self.where_head.net[-1].bias)
        self.temporal = nn.GRUCell(feat + 4 + hidden, hidden)
        self.what_head = GatedWhatHead(feat + d + 2 * hidden, d, scale_offset=what_scale_offset)
        self.pres_head = BernoulliHead(d + 4 + 2 * hidden, [], bias=pres_bias)
        self.baseline: nn.Module | None = None

    def encode(self, image: torch.Tensor, z_where: torch.Tensor) -> torch.Tensor:
        """``h^glimpse(ST(x_t, z_where))``."""
        return self.glimpse_encoder(glimpse(image, where_to_transform(z_where), self.glimpse_size))

    def initial_temporal_state(self, discovered: dict[str, torch.Tensor]) -> torch.Tensor:
        """``h^T`` of newly discovered objects: one temporal step from a zero state."""
        rows = Rows(discovered["z_pres"][..., 0].bool())  # new objects only
        features, z_where = rows.gather(discovered["features"]), rows.gather(discovered["z_where"])
        zero = features.new_zeros(features.shape[0], self.temporal.hidden_size)
        no_relation = zero
        return rows.scatter(self.temporal(bcat([features, z_where, no_relation]), zero))


class SQAIRGuide(nn.Module):
    """``q_phi(z_{1:T} | x_{1:T})`` of SQAIR (Eq. 4, 11-15)."""

    def __init__(
        self,
        image_encoder: nn.Module,
        propagation: PropagationRNNs,
        discovery: DiscoveryRNN,
        max_objects: int,
        z_what_dim: int,
        hidden: int,
        step_over_propagated: bool = False,
        mask_propagated: bool = False,
        decoder: Borrowed | None = None,
        align_steps: int = 0,
        centre_glimpses: bool = False,
    ) -> None:
        """``step_over_propagated``: discovery's RNN first steps over the propagated objects
        (:meth:`DiscoveryRNN.step_over`, a departure from the paper) as well as reading their
        summary (Eq. 6). ``mask_propagated``: after the first frame, discovery encodes the
        frame with the propagated objects' windows blacked out (:func:`unexplained`, a
        departure from the paper). ``decoder``: the model's glimpse decoder ``f^dec``,
        borrowed; given, propagation reads object ``i``'s glimpses from the :func:`residual`
        ``max(0, x_t - sum_{j<i} z_pres^j ST^{-1}(f^dec(z_what^j), z_where^j))`` of the
        objects propagated before it in this frame (a departure from the paper, whose
        glimpses read ``x_t`` itself). After two digits overlap, both objects can follow one
        digit, each drawing part of it (docs/results.md, "Lost digits"): each then sees the
        whole digit, so nothing tells the second that the first has it; read from the
        residual, it sees only what the first left undrawn, as AIR's discovery explains away.
        Measured, switched on untrained on an MLP-SQAIR trained without it (S1c, first 1,000
        test sequences): one-sample ELBO +74 nats, lost digit-frames 2.9% -> 1.7%, MOTA
        0.750 -> 0.779, the count unchanged (0.992); discovery reading the residual instead
        of :func:`unexplained` finds ghosts in the reconstruction's errors (count 0.54). The
        decoder then also takes gradient through the guide's density, which depends on it
        (docs/results.md, "Propagation that reads what is left"). ``align_steps``: that many
        Gauss-Newton steps move each propagated window onto its object's previous appearance
        (:meth:`aligned`; needs the decoder). ``centre_glimpses``: the model draws each glimpse
        with its centre of mass at its window's centre, and the guide's readings of the
        drawing (the residual, the alignment) draw them so too."""
        super().__init__()
        self.centre_glimpses = centre_glimpses
        if align_steps and decoder is None:
            raise ValueError("propagation_aligns_window needs propagation_reads_residual")
        self.align_steps = align_steps
        self.step_over_propagated = step_over_propagated
        self.mask_propagated = mask_propagated
        self.decoder = decoder
        self.image_encoder = image_encoder
        self.propagation = propagation
        self.discovery = discovery
        self.summary = MLP([z_what_dim + 4, hidden, hidden])  # Eq. 6
        self.max_objects = max_objects
        self.z_what_dim = z_what_dim
        self.hidden = hidden

    def forward(
        self, images: torch.Tensor, discover_after_first_frame: bool = True
    ) -> dict[str, torch.Tensor]:
        """Infer the latents of ``images`` (B, T, H, W); returns them as (..., T, N, ·).
        ``discover_after_first_frame``: the model's training phase of the same name."""
        pyro.module("sqair_guide", self)
        batch, num_frames = images.shape[:2]
        with pyro.plate("data", batch, dim=-1):
            encodings = self.image_encoder(images)  # (B, T, hidden): every frame at once
            state = ObjectState.empty(
                (batch,), self.max_objects, self.hidden, self.z_what_dim, images.device
            )
            history = []
            for t in range(num_frames):
                image, encoding = images[:, t], encodings[:, t]
                if t > 0:
                    propagated, temporal = self.propagate(image, encoding, state, t)
                else:
                    propagated, temporal = state.latents(), state.hidden
                num_propagated = propagated["z_pres"].sum((-2, -1))
                # The training phase: no new objects after the first frame.
                may_discover = t == 0 or discover_after_first_frame
                discovered = self.discover(
                    image, encoding, propagated, num_propagated, t, may_discover
                )
                new_temporal = self.propagation.initial_temporal_state(discovered)
                state = compact(state, propagated, temporal, discovered, new_temporal)
                history.append(state)
        return ObjectState.stack(history)

    def propagate(
        self, image: torch.Tensor, encoding: torch.Tensor, state: ObjectState, t: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Inference for propagation (Alg. 2) over the slots of frame ``t - 1``."""
        net = self.propagation
        relation = encoding.new_zeros(*encoding.shape[:-1], self.hidden)
        last_what = encoding.new_zeros(*encoding.shape[:-1], self.z_what_dim)  # z^j_t
        last_where = encoding.new_zeros(*encoding.shape[:-1], 4)
        latents = SlotStack()
        temporal_states = []
        # What the objects before i draw, with a decoder (the last object's drawing is unused).
        drawn = None if self.decoder is None else torch.zeros_like(image)
        for i in range(state.num_slots):
            was_present = state.z_pres[..., i, :]  # (..., 1)
            alive = was_present[..., 0].bool()
            # The networks run on the rows that hold object i only (sqair_pyro.nn.rows);
            # sample sites keep every row, with placeholder parameters where it is masked.
            rows = Rows(alive)
            prev_what = rows.gather(state.z_what[..., i, :])
            prev_where = rows.gather(state.z_where[..., i, :])
            prev_temporal = rows.gather(state.hidden[..., i, :])
            seen = image if drawn is None else residual(image, drawn)
            frame, context = rows.gather(seen, event_dims=2), rows.gather(encoding)
            # Proposal location and glimpse (Alg. 2 lines 5-7).
            proposal = prev_where + 0.1 * net.proposal(bcat([prev_where, prev_temporal]))
            proposal_features = net.encode(frame, proposal)
            # Relation RNN across objects (line 8, Eq. 14).
            inputs = [proposal_features, prev_what, prev_where, prev_temporal]
            previous_objects = [rows.gather(last_what), rows.gather(last_where), context]
            w_relation = net.relation(bcat([*inputs, *previous_objects]), rows.gather(relation))
            # Location (line 9), final glimpse (lines 10-11), temporal RNN (line 12, Eq. 15).
            loc, scale = net.where_head(w_relation)
            loc = proposal + loc
            if self.align_steps:
                loc = self.aligned(loc, prev_what, frame)
            z_where = pyro.sample(
                f"z_where_prop_{t}_{i}",
                dist.Normal(rows.scatter(loc), rows.scatter(scale, 1.0)).to_event(1).mask(alive),
            )
            where = rows.gather(z_where)
            features = net.encode(frame, where)
            temporal = net.temporal(bcat([features, where, w_relation]), prev_temporal)
            # Appearance (line 13) and presence, which can only stay 1 (line 14, Eq. 13).
            loc, scale = net.what_head(bcat([features, prev_what, w_relation, temporal]), prev_what)
            z_what = pyro.sample(
                f"z_what_prop_{t}_{i}",
                dist.Normal(rows.scatter(loc), rows.scatter(scale, 1.0)).to_event(1).mask(alive),
            )
            p = net.pres_head(bcat([rows.gather(z_what), where, w_relation, temporal]))
            z_pres = pyro.sample(
                f"z_pres_prop_{t}_{i}",
                dist.Bernoulli(rows.scatter(p) * was_present).to_event(1).mask(alive),
                infer=baseline_options(net.baseline, image, i, state.num_slots),
            )
            # The relation state moves on only past objects that were there (line 15, j = i).
            keep = alive.unsqueeze(-1)
            relation = torch.where(keep, rows.scatter(w_relation), relation)
            last_what = torch.where(keep, z_what, last_what)
            last_where = torch.where(keep, z_where, last_where)
            if drawn is not None and i + 1 < state.num_slots:
                one = (z_what.unsqueeze(-2), z_where.unsqueeze(-2), z_pres.unsqueeze(-2))
                drawn = drawn + draw(self.decoder, *one, image.shape[-2:], self.centre_glimpses)
            latents.append(z_pres=z_pres, z_where=z_where, z_what=z_what)
            temporal_states.append(rows.scatter(temporal))
        return latents.stacked(), torch.stack(temporal_states, dim=-2)

    def aligned(
        self, loc: torch.Tensor, prev_what: torch.Tensor, frame: torch.Tensor
    ) -> torch.Tensor:
        """``loc`` with its shift moved to where the object's previous appearance
        ``f^dec(z_what_{t-1})`` best draws over ``frame`` (:func:`aligned_window`,
        ``align_steps`` Gauss-Newton steps; the scale is kept: fitting it too moved a fifth of
        the scales by more than 15% in three steps and cost 631 nats of validation bound,
        docs/results.md, "Aligned windows: the control, the scale, a lower rate"). No gradient
        flows through the move: the where head's gradient is that of ``loc``, exactly, but the
        decoder and the sites before (the previous z_what, the objects drawn before this one)
        lose the term through the window's mean, a biased gradient for them, as under a
        stop-gradient.

        A departure from the paper (whose location comes from the where head alone).
        Measured on run G28 (shipped in session 26) at the posterior means: its windows wobble
        0.7 px a frame about their digits and z_what changes to draw the digit where the window
        left it (drawn with the previous frame's z_what a frame errs 20.3 squared units
        instead of 6.9, 10.0 after three steps of this alignment); trained with two steps, the
        KL falls by 10 nats a sequence and identity switches by 11% (docs/results.md, "Where
        the appearance error sits").
        With centred glimpses the template is drawn centred (:func:`drawing_transform`), and
        the window's centre moves by the shift its drawing moves by.
        """
        with torch.no_grad():
            template = self.decoder(prev_what)
        return shift_aligned(loc, template, frame, self.align_steps, self.centre_glimpses)

    def discover(
        self,
        image: torch.Tensor,
        encoding: torch.Tensor,
        propagated: dict[str, torch.Tensor],
        num_propagated: torch.Tensor,
        t: int,
        may_discover: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Inference for discovery (Alg. 3), conditioned on the propagated objects (Eq. 6),
        or with ``mask_propagated`` on the frame without them (:func:`unexplained`; the
        summary is then zero, as in the first frame, where the AIR's discovery it starts from
        learnt); ``may_discover=False`` leaves no free slot."""
        num_free = self.max_objects - num_propagated
        if not may_discover:
            num_free = torch.zeros_like(num_free)
        if self.mask_propagated and t > 0 and may_discover:
            encoding = self.image_encoder(
                unexplained(image, propagated, self.discovery.glimpse_size)
            )
            summary = encoding.new_zeros(*encoding.shape[:-1], self.hidden)
        else:
            what_where = bcat([propagated["z_what"], propagated["z_where"]])
            summary = (propagated["z_pres"] * self.summary(what_where)).sum(-2)
        drawn = None  # what the propagated objects draw, for discovery's difference reading
        if self.discovery.reads_difference is not None and t > 0 and may_discover:
            objects = (propagated[k] for k in ("z_what", "z_where", "z_pres"))
            drawn = draw(
                self.discovery.reads_difference, *objects, image.shape[-2:], self.centre_glimpses
            )
        return self.discovery(
            image,
            encoding,
            num_free,
            lambda kind, i: f"{kind}_disc_{t}_{i}",
            extra=summary,
            found=propagated if self.step_over_propagated and t > 0 and may_discover else None,
            drawn=drawn,
            encode=self.image_encoder,
        )
