"""One small registry for every extension point: name -> class, with the dataclass of its settings.

Each kind of extension (activations, stage-1 losses, stage-2 methods, samplers, schedules,
datasets, detection losses, AMP modes) has one ``Registry``; an extension is one class in one
module, registered with a decorator, like mmengine's and timm's registries::

    @STAGE2_METHODS.register("crt")
    class CRT(Stage2Method): ...

A registry knows where its entries live (``sources``: modules, or packages searched whole), so
adding an extension is adding its module: nothing lists it elsewhere.  ``names()`` lists what
is registered without importing anything: it reads the ``@REGISTRY.register("name")``
decorators from the sources (the literal form is the rule; ``tests/unit/test_registry.py``
checks that the listing equals what importing registers).  Validation of a config therefore
names the valid choices before torch is imported.  ``get`` imports the modules that register.

This module imports nothing heavy (it is imported before Hydra composes the config).
"""
from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, TypeVar

from lt_bench.errors import ConfigError

T = TypeVar("T")
PACKAGE_ROOT = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    cls: type[T]

    @property
    def settings(self) -> type | None:
        """The dataclass of the entry's settings (its typed recipe), if it declares one."""
        return getattr(self.cls, "Settings", None)


class Registry(Generic[T]):
    """Name -> class for one kind of extension.

    ``kind``: how errors name it ("stage-2 method"); ``variable``: the name the registry is
    bound to (the decorators the source listing looks for); ``sources``: lt_bench modules or
    packages (searched recursively) where entries are registered."""

    def __init__(self, kind: str, variable: str, sources: tuple[str, ...]):
        self.kind, self.variable, self.sources = kind, variable, tuple(sources)
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = False
        self._declared: dict[str, list[str]] | None = None

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def add(cls: type[T]) -> type[T]:
            if name in self._entries and self._entries[name].cls is not cls:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            cls.name = name
            self._entries[name] = Entry(name, cls)
            return cls
        return add

    def _load(self) -> None:
        if not self._loaded:
            for module in self._declaring_modules():
                importlib.import_module(module)
            self._loaded = True

    def names(self) -> list[str]:
        """Registered names, sorted; read from the source when the modules are not imported yet."""
        if self._loaded:
            return sorted(self._entries)
        return sorted({name for names in self._declarations().values() for name in names})

    def declared_names(self) -> set[str]:
        """The names the sources' ``@<variable>.register("name")`` decorators declare (no import)."""
        return {name for names in self._declarations().values() for name in names}

    def _declaring_modules(self) -> list[str]:
        return [module for module, names in self._declarations().items() if names]

    def _declarations(self) -> dict[str, list[str]]:
        """module -> the names its decorators register, for every module of the sources."""
        if self._declared is not None:
            return self._declared
        found: dict[str, list[str]] = {}
        for module, path in _source_files(self.sources):
            names = found.setdefault(module, [])
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                for decorator in getattr(node, "decorator_list", ()):
                    if (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)
                            and decorator.func.attr == "register" and isinstance(decorator.func.value, ast.Name)
                            and decorator.func.value.id == self.variable and decorator.args
                            and isinstance(decorator.args[0], ast.Constant)):
                        names.append(decorator.args[0].value)
        self._declared = found
        return found

    def check(self, name: Any, what: str | None = None) -> str:
        """``name`` if registered, else ConfigError listing the valid names (no import needed)."""
        valid = self.names()
        if not isinstance(name, str) or name not in valid:
            raise ConfigError(f"unknown {what or self.kind} {name!r}; valid: {', '.join(valid)}")
        return name

    def get(self, name: str, what: str | None = None) -> Entry[T]:
        self._load()
        if name not in self._entries:
            self.check(name, what)
        return self._entries[name]

    def build(self, name: str, *args, **kwargs) -> T:
        return self.get(name).cls(*args, **kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _source_files(sources: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(module name, file) of each source module, and of every module below a source package,
    found without importing anything."""
    files = []
    for source in sources:
        parts = source.split(".")
        if parts[0] != PACKAGE_ROOT.name:
            raise ValueError(f"registry sources must be lt_bench modules, got {source}")
        base = PACKAGE_ROOT.joinpath(*parts[1:])
        if base.is_dir():
            for path in sorted(base.rglob("*.py")):
                relative = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
                files.append((".".join(relative[:-1] if relative[-1] == "__init__" else relative), path))
        else:
            files.append((source, base.with_suffix(".py")))
    return files
