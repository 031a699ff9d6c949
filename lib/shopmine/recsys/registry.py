"""The recommenders by name: the one list ``recommend.models`` and ``recommend.serve_model`` are checked against, in
the default order of ``recommend.models`` (ties on the validation metric go to the earlier one).

Built-in models are named here by import path, so that the configuration can list and check them without importing
Spark; :func:`register` adds another (a class with the :class:`shopmine.recsys.base.Recommender` interface).
"""

from __future__ import annotations

import importlib

_MODELS = "shopmine.recsys.recommenders"
BUILT_IN: dict[str, str] = {
    "popularity": f"{_MODELS}:Popularity",
    "category_popularity": f"{_MODELS}:CategoryPopularity",
    "revisit": f"{_MODELS}:Revisit",
    "als": f"{_MODELS}:Als",
    "item_cf": f"{_MODELS}:ItemCfFormula",
    "item_cf_sim": f"{_MODELS}:ItemCfWeighted",
    "item_cf_sum": f"{_MODELS}:ItemCfSum",
    "ranker": "shopmine.recsys.ranker:Ranker",
}
_registry: dict[str, object] = dict(BUILT_IN)


def names() -> tuple[str, ...]:
    return tuple(_registry)


def register(cls: type, name: str | None = None) -> type:
    """Make ``cls`` available as ``name`` (default ``cls.name``) in ``recommend.models``."""
    key = name or cls.name
    if not key:
        raise ValueError(f"{cls.__name__} has no name: set the class attribute name or pass name=")
    _registry[key] = cls
    return cls


def unregister(name: str) -> None:
    if name in BUILT_IN:
        raise ValueError(f"{name!r} is a built-in recommender")
    _registry.pop(name, None)


def recommender_class(name: str) -> type:
    """The class registered as ``name`` (imported on first use)."""
    try:
        entry = _registry[name]
    except KeyError:
        raise KeyError(f"unknown recommender {name!r}; known: {', '.join(_registry)}") from None
    if isinstance(entry, str):
        module, attr = entry.split(":")
        entry = _registry[name] = getattr(importlib.import_module(module), attr)
    return entry  # type: ignore[return-value]


def create(name: str, settings):
    return recommender_class(name)(settings)
