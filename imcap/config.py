"""Configs as data: small dataclasses that nest, save to YAML and load back (after Sockeye's ``config.py``).

A config loaded from an older model dir gets the defaults of fields added since, so old models load.
"""
import dataclasses
import typing
from typing import Any, Dict, Type, TypeVar

import yaml

from .utils import atomic_open, check_condition

T = TypeVar("T", bound="Config")


@dataclasses.dataclass
class Config:
    """Base of all configs: ``to_dict``/``from_dict`` and YAML ``save``/``load``."""

    def to_dict(self) -> Dict[str, Any]:
        """Nested plain dict (configs become dicts)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: Type[T], values: Dict[str, Any]) -> T:
        """Build from a dict; nested configs are rebuilt, unknown keys rejected, missing keys defaulted.

        :raises ImcapError: on unknown keys.
        """
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        check_condition(not unknown, "%s: unknown fields %s" % (cls.__name__, unknown))
        kwargs = {}
        for key, value in values.items():
            hint = hints[key]
            if isinstance(hint, type) and issubclass(hint, Config) and isinstance(value, dict):
                value = hint.from_dict(value)
            elif getattr(hint, "__origin__", None) is typing.Union:
                for option in hint.__args__:
                    if isinstance(option, type) and issubclass(option, Config) and isinstance(value, dict):
                        value = option.from_dict(value)
            kwargs[key] = value
        return cls(**kwargs)

    def save(self, path: str) -> None:
        """Write as YAML, atomically."""
        with atomic_open(path) as f:
            yaml.safe_dump(self.to_dict(), f, default_flow_style=False, sort_keys=False)

    @classmethod
    def load(cls: Type[T], path: str) -> T:
        """Read a YAML file written by :meth:`save`."""
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(yaml.safe_load(f))
