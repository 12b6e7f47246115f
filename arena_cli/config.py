"""Where the arena is and which token to use: flags, then environment, then the config file.

The file is TOML with two keys::

    url = "https://arena.example.org"
    token = "arena_..."
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from arena_cli.errors import CliError, Exit

KEYS = ("url", "token")
API_PREFIX = "/api/v1"


@dataclass(frozen=True)
class Settings:
    url: str  # the site's address, without the API prefix
    token: str
    timeout: float = 30.0

    @property
    def api_url(self) -> str:
        return self.url + API_PREFIX


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "arena" / "config.toml"


def read_config(path: Path | None) -> dict[str, str]:
    """The config file's keys; a missing default file is no config, a missing named one an error."""
    named = path is not None or bool(os.environ.get("ARENA_CONFIG"))
    path = path or Path(os.environ.get("ARENA_CONFIG") or default_config_path())
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if named:
            raise CliError(f"config file {path} does not exist", Exit.USAGE) from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read config file {path}: {exc}", Exit.USAGE) from None
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise CliError(f"{path}: unknown keys {', '.join(unknown)} (it takes {', '.join(KEYS)})", Exit.USAGE)
    bad = [k for k in KEYS if k in data and not isinstance(data[k], str)]
    if bad:
        raise CliError(f"{path}: {', '.join(bad)} must be a string", Exit.USAGE)
    return data


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if url.endswith(API_PREFIX):
        url = url[: -len(API_PREFIX)]
    if not url.startswith(("http://", "https://")):
        raise CliError(f"the arena's address must start with http:// or https://, not {url!r}", Exit.USAGE)
    return url


def resolve(url: str | None, token: str | None, config: Path | None, timeout: float) -> Settings:
    """Settings from flags, then ARENA_URL / ARENA_TOKEN, then the config file."""
    file = read_config(config)
    url = url or os.environ.get("ARENA_URL") or file.get("url")
    token = token or os.environ.get("ARENA_TOKEN") or file.get("token")
    if not url:
        raise CliError('no arena address: pass --url, set ARENA_URL, or put url = "..." in the config file', Exit.USAGE)
    if not token:
        raise CliError(
            'no API token: pass --token, set ARENA_TOKEN, or put token = "..." in the config file '
            "(team owners issue tokens on the team admin page)",
            Exit.AUTH,
        )
    return Settings(url=normalize_url(url), token=token.strip(), timeout=timeout)
