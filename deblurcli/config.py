"""The user's settings file: ``config.toml`` in the platform's config folder.

It holds the choices a user makes once rather than on every command line; today only the default model
(``deblur models default NAME`` writes ``model = "NAME"``). The folder is platformdirs' user config dir
(``~/.config/deblurcli`` on Linux, honouring ``XDG_CONFIG_HOME``; ``~/Library/Application Support/deblurcli``
on macOS; ``%APPDATA%\\deblurcli`` on Windows), so it is where each platform's users look for it.

TOML because it is what people edit by hand; it is read with ``tomllib`` (``tomli`` before Python 3.11),
and written here, since the file holds flat strings only and a TOML writer would be one more dependency.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from deblurcli.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover -- exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_FILE = "config.toml"


def config_path() -> Path:
    """Where the settings file is (whether or not it exists)."""
    import platformdirs

    return Path(platformdirs.user_config_dir("deblurcli", appauthor=False)) / CONFIG_FILE


def read_config() -> dict[str, str]:
    """The settings in the file; empty when there is no file. A file that is not TOML, or whose values are
    not strings, is a :class:`ConfigError` naming it, so the user can fix or delete it."""
    path = config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the settings file ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid TOML file ({exc}); fix or delete it") from None
    wrong = [key for key, value in data.items() if not isinstance(value, str)]
    if wrong:
        raise ConfigError(f"{path}: {wrong[0]} must be a string; fix or delete the file")
    return data


def _dump(settings: dict[str, str]) -> str:
    # A JSON string literal is a valid TOML basic string: the same quotes, and escapes TOML also knows.
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in sorted(settings.items()))


def write_setting(key: str, value: str | None) -> Path:
    """Set ``key`` to ``value`` in the settings file (``None`` removes it), keeping the other settings.

    Written atomically: a crash leaves the old file or the new one, never half of one. Returns the path.
    """
    from deblurcli.atomic import atomic_write_bytes
    from deblurcli.errors import PhotoError

    settings = read_config()
    if value is None:
        settings.pop(key, None)
    else:
        settings[key] = value
    path = config_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, _dump(settings).encode("utf-8"))
    except (OSError, PhotoError) as exc:
        raise ConfigError(f"{path}: cannot write the settings file ({exc})") from None
    return path


def default_model() -> str | None:
    """The model ``deblur models default NAME`` saved, or None."""
    return read_config().get("model") or None
