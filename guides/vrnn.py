"""The VRNN's inference network (SQAIR paper App. D.3) as a Pyro guide.

It runs the model's own LSTM (:class:`~sqair_pyro.models.vrnn.VRNNCore`, shared) over the
observed frames and the latents it samples::

    (o_t, c_t) = LSTM([psi_x(x_{t-1}), psi_z(z_{t-1})], (o_{t-1}, c_{t-1}))
    q(z_t | z_{<t}, x_{<=t}) = N(mu_q([o_t, psi_x(x_t)]), sigma_q([o_t, psi_x(x_t)]))

with separate MLPs for the mean and the standard deviation, as the paper.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from sqair_pyro.models.vrnn import VRNNCore
from sqair_pyro.nn.modules import MLP, bcat

#: The smallest posterior standard deviation.
MIN_SCALE = 1e-3


class VRNNGuide(nn.Module):
    """``q(z_{1:T} | x_{1:T})`` of the VRNN (see the module docstring)."""

    def __init__(self, core: VRNNCore, hidden: int, layers: int) -> None:
        super().__init__()
        self.core = core
        n_in = core.out_dim + hidden
        self.loc = MLP([n_in, *[hidden] * layers, core.z_dim])
        self.scale = MLP([n_in, *[hidden] * layers, core.z_dim])

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sample ``z_t`` for every frame of ``images`` (B, T, H, W); returns ``z`` (..., T, Z)."""
        pyro.module("vrnn_guide", self)
        batch, num_frames = images.shape[:2]
        x_prev, z, o, c = self.core.initial(batch)
        latents = []
        with pyro.plate("data", batch, dim=-1):
            for t in range(num_frames):
                o, c = self.core.step(x_prev, z, (o, c))
                features = bcat([o, self.core.psi_x(images[:, t].flatten(-2))])
                scale = F.softplus(self.scale(features)) + MIN_SCALE
                z = pyro.sample(f"z_{t}", dist.Normal(self.loc(features), scale).to_event(1))
                x_prev = images[:, t]
                latents.append(z)
        return {"z": torch.stack(latents, -2)}
