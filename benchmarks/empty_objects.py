"""Present objects that draw nothing: how many, what they cost, and whether training sees it.

An AIR guide may keep an object present although its decoded glimpse draws no pixel above
``--threshold`` (the content-box convention of ``sqair-pyro evaluate``). Such an object
explains nothing, so the bound prefers it absent: it pays the count prior and the KL of its
z_where and z_what for no gain in ``log p(x | z)``. For an AIR checkpoint this script reports,
on the first ``--images`` frames of ``--data`` (every frame of a sequence on its own, as AIR
sees them):

- per slot: how often it is present, and present and drawing; the frames whose first slot is
  empty while a later one draws (presence is a chain, z_pres_i = 0 forces every later slot
  off, so such a first slot cannot be switched off alone); where empty first slots sit;
- ``switch_off``: for one posterior draw, the change of each frame's log weight
  ``log p(x, z) - log q(z | x)`` when its trailing empty objects are switched off (their
  z_where and z_what kept, then masked as for any absent object), in all and by site family;
- ``presence_gradient``: the derivative of the training loss (the objective's surrogate, as
  ``Trainer.step`` differentiates it) with respect to the output bias of the discovery
  presence head, over ``--draws`` draws: positive means a gradient step lowers every slot's
  presence probability.

    .venv/bin/python benchmarks/empty_objects.py --checkpoint runs/pedD/best.pt \\
        --data data/pets/test.npz --images 1000 --draws 20 --threads 1
"""

from __future__ import annotations

import re
import sys

import torch
from gradient_terms import checkpoint_parser, load_programs, parse_checked, run_script, write_report
from pyro import poutine

from sqair_pyro.cli import positive_int
from sqair_pyro.data import load_npz
from sqair_pyro.evaluate import predicted_boxes
from sqair_pyro.train import make_objective, surrogate_losses

FAMILIES = ("z_pres", "z_where", "z_what")


def traced(model, guide, images: torch.Tensor, values: dict | None = None) -> tuple:
    """The guide's trace (its sites set to ``values`` when given) and the model replayed on it,
    both with log densities; conditioned sites are marked latent again so replay accepts them."""
    program = poutine.condition(guide, data=values) if values else guide
    guide_trace = poutine.trace(program).get_trace(images)
    for site in guide_trace.nodes.values():
        if site["type"] == "sample" and site["name"] != "data":
            site["is_observed"] = False
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(images)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    return guide_trace, model_trace


def log_weight_terms(guide_trace, model_trace) -> dict[str, torch.Tensor]:
    """Each site's contribution to the log weight per image: ``p:name`` is log p, ``q:name``
    is -log q."""
    terms = {}
    for kind, trace, sign in (("p", model_trace, 1.0), ("q", guide_trace, -1.0)):
        for name, site in trace.nodes.items():
            if site["type"] == "sample" and name != "data":
                terms[f"{kind}:{name}"] = sign * site["log_prob"].detach()
    return terms


def trailing_empty_off(present: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
    """Presence (B, N) with the empty objects that no drawing object follows switched off."""
    keep = present.clone()
    for slot in reversed(range(present.shape[-1])):
        none_after = ~keep[:, slot + 1 :].any(-1)
        keep[:, slot] &= ~(empty[:, slot] & none_after)
    return keep


def presence_bias(guide) -> torch.nn.Parameter:
    """The output bias of the discovery presence head (one logit for every slot)."""
    found = [
        p
        for name, p in guide.named_parameters()
        if name.startswith("discovery.pres_head.") and name.endswith("bias") and p.numel() == 1
    ]
    if len(found) != 1:
        raise SystemExit("empty_objects.py: the guide has no single discovery presence bias")
    return found[0]


def main(argv: list[str] | None = None) -> None:
    parser = checkpoint_parser(__file__, __doc__.splitlines()[0])
    parser.add_argument("--images", type=positive_int, default=1000)
    parser.add_argument("--draws", type=positive_int, default=20)
    parser.add_argument("--batch", type=positive_int, default=256, help="frames per gradient draw")
    parser.add_argument("--threshold", type=float, default=0.1)
    args = parse_checked(parser, argv)
    config, model, guide = load_programs(args)
    if config.model != "air":
        raise ValueError(f"{args.checkpoint} is a {config.model_name}, not AIR")
    frames = torch.as_tensor(load_npz(args.data)["images"]).float() / 255
    images = frames.reshape(-1, *frames.shape[-2:])[: args.images]
    slots = config.max_objects

    with torch.no_grad():
        guide_trace, model_trace = traced(model, guide, images)
        latents = {
            f: torch.stack([guide_trace.nodes[f"{f}_{i}"]["value"] for i in range(slots)], -2)
            for f in FAMILIES
        }
        size = tuple(images.shape[-2:])
        _, ids = predicted_boxes(model, latents, size, "content", args.threshold)
        present = latents["z_pres"][..., 0].bool()
        drawing = present & (ids >= 0)
        empty = present & ~drawing
        first_empty = empty[:, 0] & drawing[:, 1:].any(-1)
        keep = trailing_empty_off(present, empty)
        changed = (keep != present).any(-1)
        values = {
            name: site["value"]
            for name, site in guide_trace.nodes.items()
            if site["type"] == "sample" and name != "data"
        }
        values.update({f"z_pres_{i}": keep[:, i : i + 1].float() for i in range(slots)})
        before = log_weight_terms(guide_trace, model_trace)
        after = log_weight_terms(*traced(model, guide, images, values))
    change = {k: (after[k] - before[k])[changed] for k in before}
    total = sum(change.values())
    by_family: dict[str, float] = {}
    for key, value in change.items():
        family = re.sub(r"_\d+$", "", key)
        by_family[family] = by_family.get(family, 0.0) + float(value.mean())

    bias, objective = presence_bias(guide), make_objective(config)
    gradients = []
    for draw in range(args.draws):
        start = (draw * args.batch) % max(len(images) - args.batch + 1, 1)
        parts, _ = surrogate_losses(objective, model, guide, images[start : start + args.batch])
        gradient = torch.zeros(())
        for surrogate, params in parts:
            if params is None or any(p is bias for p in params):
                (g,) = torch.autograd.grad(surrogate, [bias], allow_unused=True)
                gradient = gradient + (0.0 if g is None else g.sum())
        gradients.append(float(gradient))
    grads = torch.tensor(gradients)

    report = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "images": len(images),
        "objects_per_image": float(present.float().sum(-1).mean()),
        "drawing_objects_per_image": float(drawing.float().sum(-1).mean()),
        "present_by_slot": present.float().mean(0).tolist(),
        "present_and_drawing_by_slot": drawing.float().mean(0).tolist(),
        "first_slot_empty_before_a_drawing_slot": float(first_empty.float().mean()),
        "empty_first_slot_z_where_mean": latents["z_where"][:, 0][empty[:, 0]].mean(0).tolist(),
        "switch_off": {
            "images_changed": int(changed.sum()),
            "log_weight_change_mean": float(total.mean()) if changed.any() else None,
            "log_weight_change_median": float(total.median()) if changed.any() else None,
            "share_raised": float((total > 0).float().mean()) if changed.any() else None,
            "by_family": by_family,
        },
        "presence_gradient": {
            "draws": len(grads),
            "batch": args.batch,
            "mean": float(grads.mean()),
            "sd": float(grads.std()),
            "se": float(grads.std() / len(grads) ** 0.5),
        },
    }
    write_report(report, args.json)


if __name__ == "__main__":
    sys.exit(run_script(main))
