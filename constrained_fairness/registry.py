"""Named factories that a user extends by import: the datasets, models and methods a config
can name (and the constraint types, :data:`constrained_fairness.constraints.registry.CONSTRAINTS`).

A config names an entry by its registered name (``data.name: adult``) or by an import path,
``package.module:function``, which is imported when the run starts (from ``sys.path``; the
``cfair`` script adds the working folder), so a module of one's own extends the protocol
without a registration step and without editing the library::

    from constrained_fairness.registry import DATASETS

    @DATASETS.register("my_cohort")
    def my_cohort(data, seed):  # then data.name: my_cohort, once the module is imported
        ...

A name that is neither is a one-line :class:`ConfigError` naming the config key, the closest
registered name and the import-path form.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T", bound=Callable)


def is_import_path(name: str) -> bool:
    """``package.module:attribute`` (one colon, both sides non-empty)."""
    module, sep, attribute = name.partition(":")
    return bool(sep and module and attribute and ":" not in attribute)


class Registry(Generic[T]):
    """Factories of one kind (``kind``, e.g. ``"dataset"``) by name, for config key ``key``."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind, self.key = kind, key
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` adds the function under ``name``."""
        if not name or is_import_path(name):
            raise ConfigError(
                f"a registered {self.kind} name must be non-empty and without ':', got {name!r}"
            )

        def decorate(factory: T) -> T:
            self._entries[name] = factory
            return factory

        return decorate

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def check(self, name: str) -> None:
        """A ConfigError unless ``name`` is registered or an import path (imported later)."""
        if name in self._entries or (isinstance(name, str) and is_import_path(name)):
            return
        close = difflib.get_close_matches(str(name), list(self._entries), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"unknown {self.kind} {name!r} in {self.key}; {hint}choose one of {', '.join(self._entries)}, "
            f"or name your own as package.module:function"
        )

    def resolve(self, name: str) -> T:
        """The factory registered as ``name``, or the attribute that ``package.module:function`` names."""
        self.check(name)
        if name in self._entries:
            return self._entries[name]
        module_name, _, attribute = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"{self.key} {name!r}: cannot import module {module_name!r} ({exc}); put it on the "
                "Python path (e.g. PYTHONPATH) or fix the name"
            ) from None
        factory = getattr(module, attribute, None)
        if not callable(factory):
            raise ConfigError(
                f"{self.key} {name!r}: module {module_name!r} has no function {attribute!r}; fix the name"
            )
        return factory


DATASETS: Registry = Registry("dataset", "data.name")
"""``loader(data: DataConfig, seed: int)`` → :class:`~constrained_fairness.data.TabularData`,
:class:`~constrained_fairness.data.ImageData`, or one ``torch.utils.data.Dataset`` of
``(input, target, attributes)`` that the run splits (``data.val_fraction``, ``data.test_fraction``)."""

MODELS: Registry = Registry("model", "model.name")
"""``factory(model: ModelConfig, *, num_classes: int, input_shape: tuple[int, ...])`` → ``nn.Module``."""

METHODS: Registry = Registry("method", "methods")
"""``method(context: MethodContext)`` → :class:`~constrained_fairness.experiment.methods.MethodSetup`:
the constraints and dual settings of one sparse fine-tuning run."""
