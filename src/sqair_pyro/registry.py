"""Named components: small factories that the configuration names, so that a part written in
a notebook or a user's module trains, saves, loads and evaluates like a built-in one.

A factory takes the :class:`~sqair_pyro.config.Config` and the component's own arguments::

    from sqair_pyro.registry import register

    @register("discovery_prior")
    def poisson_prior(config, rate=0.5):
        return PoissonDiscoveryPrior(config.max_objects, rate)

and the configuration then names it: ``discovery_prior="poisson_prior"`` or, with arguments,
``discovery_prior={"name": "poisson_prior", "rate": 0.3}``. A module that registers
components is listed in ``Config.imports`` (``--import`` on the command line); checkpoints keep
that list, so loading imports the module again before rebuilding the model.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from sqair_pyro.errors import one_line

__all__ = ["KINDS", "component", "import_module", "names", "register", "spec"]

#: What can be registered, and what a factory of each kind returns.
KINDS: dict[str, str] = {
    "model": "the generative Pyro program as an nn.Module, from (config, decoder)",
    "guide": "the inference Pyro program as an nn.Module, from (config, image_encoder, "
    "glimpse_encoder, decoder), the decoder the model's own",
    "networks": "(image_encoder, glimpse_encoder, decoder); a VRNN's: (core, None, decoder)",
    "discovery_prior": "a DiscoveryPrior (continue probabilities of new objects)",
    "propagation_prior": "a PropagationPrior (p(z_t | z_{t-1}) of tracked objects)",
    "likelihood": "p(x | z) from the decoder: a callable likelihood module",
}
_FACTORIES: dict[str, dict[str, Callable[..., Any]]] = {kind: {} for kind in KINDS}

F = TypeVar("F", bound=Callable[..., Any])


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}; choose one of {', '.join(KINDS)}")


def register(kind: str, name: str | None = None) -> Callable[[F], F]:
    """Decorator: register a factory ``(config, **args)`` under ``name`` (default: its own
    name). Registering a name again replaces it (a notebook cell run twice)."""
    _check_kind(kind)

    def decorate(factory: F) -> F:
        _FACTORIES[kind][name or factory.__name__] = factory
        return factory

    return decorate


def names(kind: str) -> list[str]:
    """The registered names of a kind, sorted."""
    _check_kind(kind)
    return sorted(_FACTORIES[kind])


def spec(value: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, arguments)`` of a component given as a name or as ``{"name": ..., **args}``."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        args = {key: arg for key, arg in value.items() if key != "name"}
        return value["name"], args
    raise ValueError(f"a component is a name or a dict with a 'name', got {value!r}")


def component(kind: str, value: str | Mapping[str, Any]) -> Callable[..., Any]:
    """The factory of ``value`` (a name or ``{"name": ..., **args}``) with its arguments
    bound: call it with the config (and the parts its kind takes, :data:`KINDS`)."""
    _check_kind(kind)
    name, args = spec(value)
    if name not in _FACTORIES[kind]:
        known = ", ".join(names(kind)) or "none"
        raise ValueError(
            f"unknown {kind} {name!r}; registered: {known} (a component of your own must be "
            "registered by a module listed in imports / --import)"
        )
    factory = _FACTORIES[kind][name]
    return lambda config, *parts: factory(config, *parts, **args)


def import_module(target: str) -> None:
    """Import a module that registers components: a module name (``my_lab.priors``) or the
    path of a ``.py`` file. Whatever goes wrong in it (not found, a syntax error, an exception,
    even ``sys.exit``) is one ``ValueError`` naming the module."""
    if not target.strip():
        raise ValueError("--import / imports needs a module name or the path of a .py file")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise FileNotFoundError(f"component module not found: {path}")
        module_name = f"sqair_pyro_user_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except (Exception, SystemExit) as error:  # the user's code: any error, in one line
            del sys.modules[module_name]
            raise ValueError(f"cannot import component module {path}: {_said(error)}") from error
        return
    if target.startswith("."):
        raise ValueError(f"cannot import component module {target!r}: give its full name")
    try:
        importlib.import_module(target)
    except (Exception, SystemExit) as error:
        raise ValueError(f"cannot import component module {target!r}: {_said(error)}") from error


def _said(error: BaseException) -> str:
    """An error raised while importing a user's module, in one line."""
    if isinstance(error, SystemExit):
        return f"it called sys.exit({error.code!r})"
    return one_line(error, with_type=True)
