"""Reading the TOML file into a Config: sections, keys, types and choices, then validation.

Why strict: a kiosk runs unattended for months, so an unknown key, a wrong type or a value outside
its choices must stop it at boot with one line naming the file and the key, never be ignored.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from appliance.config.errors import ConfigError, show_value
from appliance.config.settings import Config
from appliance.config.validation import validate

SECTIONS: dict[str, type] = {f.name: typing.get_type_hints(Config)[f.name]
                             for f in dataclasses.fields(Config) if f.name != "source"}


def load_config(path: str | Path) -> Config:
    """Read and validate a kiosk TOML file; raise ConfigError with an admin-friendly message."""
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(source, "", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    return config_from_dict(data, source=source, base_dir=path.parent)


def config_from_dict(data: dict[str, Any], source: str = "<dict>", base_dir: Path | None = None) -> Config:
    """Build a validated Config from parsed TOML; relative paths are resolved against base_dir."""
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(source, unknown[0],
                          f"unknown section; allowed: {', '.join(SECTIONS)}")
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(source, name, f"must be a table [{name}], got {show_value(table)}")
        sections[name] = _build_section(cls, table, name, source, base_dir)
    config = Config(**sections, source=source)
    validate(config)
    return config


def _build_section(cls: type, table: dict[str, Any], section: str, source: str,
                   base_dir: Path | None) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(source, f"{section}.{unknown[0]}",
                          f"unknown key; allowed in [{section}]: {', '.join(fields)}")
    values: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{section}.{name}"
        value = _coerce(value, hints[name], key, source, base_dir)
        choices = fields[name].metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(source, key, f"{show_value(value)} is not allowed; use one of: {', '.join(choices)}")
        values[name] = value
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str, source: str, base_dir: Path | None) -> Any:
    origin = typing.get_origin(hint)
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(source, key, f"must be a list, got {show_value(value)}")
        return [_coerce(v, item_type, f"{key}[{i}]", source, base_dir) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        # Optional[X]: TOML has no null, so a value that is present is always an X.
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _coerce(value, inner, key, source, base_dir)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, f"must be true or false, got {show_value(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"must be a whole number, got {show_value(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(source, key, f"must be a number, got {show_value(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(source, key, f"must be a string, got {show_value(value)}")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(source, key, f"must be a file path string, got {show_value(value)}")
        p = Path(value).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        return p
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # pragma: no cover
