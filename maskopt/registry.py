"""One registry pattern for methods, stages and export formats: a name → a class, the built-in entries
imported on first use, and one clear error for an unknown name.

    METHODS = Registry("method", builtins=("maskopt.solve.methods.wanda", ...))

    @METHODS.register("wanda")
    class Wanda: ...

    METHODS.get("wanda")   # the class;  METHODS.names()  # every registered name
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable


class Registry:
    """Classes by name, each with optional metadata (``kind``, preset options)."""

    def __init__(self, what: str, builtins: Iterable[str] = (), normalize: Callable[[str], str] | None = None):
        self.what = what
        self.normalize = normalize or (lambda name: name)
        self.builtins = tuple(builtins)
        self._entries: dict[str, tuple[type, dict[str, Any]]] = {}
        self._loaded = False

    def register(self, name: str, **meta: Any) -> Callable[[type], type]:
        """Decorator: register the class under ``name`` (the first name also becomes ``cls.name``)."""

        def deco(cls: type) -> type:
            if "name" not in cls.__dict__:
                cls.name = name
            self._entries[name] = (cls, meta)
            return cls

        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod in self.builtins:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:  # a listed entry whose file is not in this checkout: not registered
                if e.name != mod:
                    raise

    def names(self, **where: Any) -> list[str]:
        """Registered names, sorted; ``where``: metadata every returned entry has (e.g. kind='recover')."""
        self._load()
        return sorted(n for n, (_, meta) in self._entries.items()
                      if all(meta.get(k) == v for k, v in where.items()))

    def entry(self, name: str, **where: Any) -> tuple[type, dict[str, Any]]:
        """(class, metadata) of ``name``; an unknown name is a ValueError listing the known ones."""
        self._load()
        key = self.normalize(name)
        if key not in self.names(**where):
            kind = where.get("kind") or self.what
            raise ValueError(f"unknown {kind} {name!r}; available: {', '.join(self.names(**where))}")
        return self._entries[key]

    def get(self, name: str, **where: Any) -> type:
        return self.entry(name, **where)[0]

    def __contains__(self, name: str) -> bool:
        self._load()
        return self.normalize(name) in self._entries
