"""Training configs: dataclasses with docstrings, read from YAML, overridable per field."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar

import yaml

from vans.errors import ConfigError

C = TypeVar("C")


@dataclass
class TrainConfig:
    """The generic part of every training run (the stage-specific part lives with the stage)."""

    out_dir: str = "runs/train"
    """Run directory: checkpoints/, metrics.jsonl, curves.png and the final model in final/."""
    steps: int = 1000
    """Optimizer steps."""
    batch_size: int = 8
    """Samples per optimizer step over all processes and accumulation steps (the global
    batch); each process takes batch_size / (num_processes * grad_accum) per micro-batch,
    so the loss curve does not depend on how many processes run."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step on each process."""
    lr: float = 5e-5
    """Peak learning rate (the paper's 5e-5 for every stage)."""
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Shape of the LR after warm-up."""
    warmup_steps: int = 0
    """Linear warm-up from 0 to `lr` over this many steps."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this; None disables clipping."""
    mixed_precision: Literal["no", "bf16"] = "no"
    """"bf16" runs the forward under bf16 autocast (weights and optimizer stay fp32)."""
    seed: int = 0
    """Seeds data order, initialisation of new weights and every per-sample random choice."""
    save_every: int = 500
    """Write a resumable checkpoint every this many steps (and at the end)."""
    keep_last: int = 2
    """Keep only the newest this many checkpoints."""
    eval_every: int = 100
    """Compute the eval loss every this many steps (0 disables)."""
    eval_samples: int = 64
    """Eval loss over at most this many held-out samples (always the same ones)."""
    log_every: int = 10
    """Write a metrics row every this many steps."""
    num_workers: int = 0
    """DataLoader worker processes."""

    def __post_init__(self) -> None:
        problems = []
        for name, low in (("lr", "> 0"), ("adam_eps", "> 0"), ("weight_decay", ">= 0")):
            value = getattr(self, name)
            if not (math.isfinite(value) and (value > 0 if low == "> 0" else value >= 0)):
                problems.append(f"{name} must be a number {low}, got {value}")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            problems.append(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            problems.append(f"max_grad_norm must be > 0 or null, got {self.max_grad_norm}")
        if self.warmup_steps > self.steps:
            problems.append(
                f"warmup_steps ({self.warmup_steps}) is longer than the run (steps={self.steps})"
            )
        if problems:
            raise ConfigError("invalid train config: " + "; ".join(problems))


def load_config(cls: type[C], path: str | Path | None, overrides: Sequence[str] = ()) -> C:
    """Read the YAML file at `path` (or start from the defaults when None) into the dataclass
    `cls`, with `key.sub=value` overrides (values parsed as YAML) applied on top.

    Nested mappings become nested dataclasses; lists become tuples where the field says so;
    ints are accepted for float fields, and so are strings like "1e-4" (YAML 1.1 reads a
    float without a dot as a string). Unknown keys and wrong types raise a ConfigError that
    names the file (or the override) and the dotted field.
    """
    data: Any = {}
    origin = _Origins("defaults" if path is None else str(path))
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8"
            ) from None
        data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{origin.default}: expected a mapping of fields, got {_show(data)}")
    for override in overrides:
        key, sep, text = override.partition("=")
        keys = key.strip().split(".")
        if not sep or not all(keys):
            raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. train.lr=1e-4")
        label = f"override {override!r}"
        _check_path(cls, keys, label)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        node = data
        for name in keys[:-1]:
            if not isinstance(node.get(name), dict):
                node[name] = {}
            node = node[name]
        _merge(node, keys[-1], value)
        origin.labels[".".join(keys)] = label
    return _convert(cls, data, "", origin)


def config_to_dict(config: Any) -> Any:
    """A dataclass config as plain YAML/JSON data (tuples as lists, paths as strings), which
    `load_config` reads back to an equal config."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, dict):
        return {str(k): config_to_dict(v) for k, v in config.items()}
    if isinstance(config, list | tuple):
        return [config_to_dict(v) for v in config]
    if isinstance(config, Enum):
        return config.value
    if isinstance(config, PurePath):
        return str(config)
    return config


def _merge(node: dict[str, Any], key: str, value: Any) -> None:
    """Set `node[key] = value`, merging a mapping into a mapping key by key."""
    if isinstance(value, dict) and isinstance(node.get(key), dict):
        for name, item in value.items():
            _merge(node[key], name, item)
    else:
        node[key] = value


class _Origins:
    """Where each value came from: the file, or the override that set it (or a parent)."""

    def __init__(self, default: str) -> None:
        self.default = default
        self.labels: dict[str, str] = {}

    def error(self, where: str, problem: str) -> ConfigError:
        parts = where.split(".") if where else []
        source = self.default
        for n in range(len(parts), 0, -1):
            prefix = ".".join(parts[:n]).split("[")[0]
            if prefix in self.labels:
                source = self.labels[prefix]
                break
        return ConfigError(f"{source}: {where or '(top level)'}: {problem}")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _fields(cls: type) -> dict[str, Any]:
    """Init fields of a dataclass and their resolved types."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _unknown(cls: type, name: str) -> str:
    names = list(_fields(cls))
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown field{hint}; {cls.__name__} has {', '.join(names)}"


def _check_path(cls: type, keys: list[str], label: str) -> None:
    """Fail, naming the override, if `keys` does not lead to a field of `cls`. A mapping
    field takes one more key, its entry (`grpo.reward_weights.r_c2=0`)."""
    tp: Any = cls
    for i, name in enumerate(keys):
        where = ".".join(keys[: i + 1])
        if typing.get_origin(tp) is dict:
            if i == len(keys) - 1:
                return
            mapping = ".".join(keys[:i])
            raise ConfigError(f"{label}: {mapping} takes one key: {mapping}.NAME=VALUE")
        section = _dataclass_of(tp)
        if section is None:
            raise ConfigError(f"{label}: {'.'.join(keys[:i])} is not a section")
        if name not in _fields(section):
            raise ConfigError(f"{label}: {where}: {_unknown(section, name)}")
        tp = _fields(section)[name]


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass in `tp` (itself, or X in `X | None`), if any."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


def _convert(tp: Any, value: Any, where: str, origin: _Origins) -> Any:
    """`value` (parsed YAML) as type `tp`, or a ConfigError naming its source and `where`."""
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise origin.error(where, f"expected a mapping, got {_show(value)}")
        fields = _fields(tp)
        kwargs = {}
        for name, item in value.items():
            if name not in fields:
                raise origin.error(_join(where, str(name)), _unknown(tp, str(name)))
            kwargs[name] = _convert(fields[name], item, _join(where, name), origin)
        missing = [
            f.name
            for f in dataclasses.fields(tp)
            if f.init
            and f.name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            names = ", ".join(_join(where, m) for m in missing)
            raise ConfigError(f"{origin.default}: missing required field {names}")
        try:
            return tp(**kwargs)
        except ConfigError as exc:  # the dataclass's own checks: say where its values came from
            section = f" ({where})" if where else ""
            raise ConfigError(f"{origin.default}{section}: {exc}") from None
    origin_type, args = typing.get_origin(tp), typing.get_args(tp)
    if origin_type is typing.Union or origin_type is types.UnionType:
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _convert(options[0], value, where, origin)
        for option in options:
            with contextlib.suppress(ConfigError):
                return _convert(option, value, where, origin)
        raise origin.error(where, f"expected {_name(tp)}, got {_show(value)}")
    if origin_type is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            choices = ", ".join(repr(a) for a in args)
            raise origin.error(where, f"must be one of {choices}, got {_show(value)}")
        return value
    if origin_type is tuple or origin_type is list:
        if not isinstance(value, list | tuple):
            raise origin.error(where, f"expected a list, got {_show(value)}")
        if origin_type is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise origin.error(where, f"expected {len(args)} items, got {len(value)}")
            item_types = list(args)
        else:
            item_types = [args[0] if args else Any] * len(value)
        items = [
            _convert(t, v, f"{where}[{i}]", origin)
            for i, (t, v) in enumerate(zip(item_types, value, strict=True))
        ]
        return tuple(items) if origin_type is tuple else items
    if origin_type is dict:
        if not isinstance(value, dict):
            raise origin.error(where, f"expected a mapping, got {_show(value)}")
        value_type = args[1] if args else Any
        return {k: _convert(value_type, v, _join(where, str(k)), origin) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in tp)
            raise origin.error(where, f"must be one of {choices}, got {_show(value)}") from None
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is bool or tp is str:
        if isinstance(value, tp):
            return value
    elif isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, str | PurePath):
            return tp(value)
    else:
        raise TypeError(f"load_config: unsupported field type {tp!r} at {where}")
    raise origin.error(where, f"expected {_name(tp)}, got {_show(value)}")


def _name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if tp in names:
        return names[tp]
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _show(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"
