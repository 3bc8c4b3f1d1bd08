"""The web server's own settings: where it listens, who may log in, which host names it answers to.

They are not `rag.config.Config` fields: the library never listens on a port. Like the library's settings they
come from defaults, `RAG_*` variables (`RAG_HOST`, `RAG_PORT`, `RAG_AUTH`, `RAG_ALLOWED_HOSTS`) and the flags of
`python -m demo`, in that order of precedence, lowest first.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from rag.errors import ConfigError


@dataclass(frozen=True)
class ServerSettings:
    """How `python -m demo` serves the chat. The password never appears in the repr."""

    host: str = "127.0.0.1"
    port: int = 7860
    # `user:password`; a login page for the chat and HTTP Basic for the JSON API.
    auth: str | None = field(default=None, repr=False)
    # Host names (optionally `name:port`) the server answers to besides its own address and the loopback names.
    allowed_hosts: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        """Defaults overridden by `RAG_HOST`, `RAG_PORT`, `RAG_AUTH` and `RAG_ALLOWED_HOSTS` (comma separated).

        Other `RAG_*` variables belong to `rag.config.Config`, which checks them.

        Raises:
            ConfigError: `RAG_PORT` is not a port number, or `RAG_AUTH` is not `user:password`.
        """
        environ = os.environ if environ is None else environ
        return cls().replace(
            host=environ.get("RAG_HOST") or None,
            port=environ.get("RAG_PORT") or None,
            auth=environ.get("RAG_AUTH") or None,
            allowed_hosts=environ.get("RAG_ALLOWED_HOSTS") or None,
        )

    def replace(self, **changes: Any) -> ServerSettings:
        """A copy with the non-None `changes` applied (None means "not given"), checked and converted.

        Raises:
            ConfigError: a value that does not fit its setting; the message names the flag and the variable.
        """
        given = {k: v for k, v in changes.items() if v is not None}
        if "port" in given:
            given["port"] = _port(given["port"])
        if "allowed_hosts" in given:
            given["allowed_hosts"] = parse_allowed_hosts(given["allowed_hosts"])
        if "auth" in given:
            parse_auth(given["auth"])
        return dataclasses.replace(self, **given)

    @property
    def credentials(self) -> tuple[str, str] | None:
        """The login as a (user, password) pair, or None without `auth`."""
        return parse_auth(self.auth)


def parse_auth(value: str | tuple[str, str] | None) -> tuple[str, str] | None:
    """`user:password` as a pair; None stays None.

    Raises:
        ConfigError: the value has no colon, or an empty user or password (the message never repeats the value).
    """
    if value is None or isinstance(value, tuple):
        return value
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ConfigError("--auth (RAG_AUTH) must look like user:password, with neither part empty")
    return user, password


def parse_allowed_hosts(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`"a.example, b.example:8080"` (or a list of such strings) as lower-case names, empty entries dropped.

    Raises:
        ConfigError: an entry holds a scheme, a path or a space, or a port that is not a number.
    """
    items = value.split(",") if isinstance(value, str) else [part for item in value for part in item.split(",")]
    hosts = []
    for item in items:
        entry = item.strip().lower()
        if not entry:
            continue
        name, port = split_host(entry)
        if not name or any(c in name for c in "/@ \t?#") or (port is None and entry.endswith(":")):
            raise ConfigError(
                f"--allowed-hosts (RAG_ALLOWED_HOSTS) entry {entry!r} is not a host name; give names like "
                "mybox.local or chat.example.org:8443, comma separated, without http://"
            )
        hosts.append(entry)
    return tuple(hosts)


def split_host(value: str) -> tuple[str, int | None]:
    """A `Host` header or host entry as (lower-case name, port or None); IPv6 loses its brackets.

    Returns ("", None) for a value that is not a host at all (say, a bad port), which matches no allowed name.
    """
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return "", None
        port_text = rest[1:] if rest else None
    elif value.count(":") == 1:
        name, _, port_text = value.partition(":")
    elif ":" in value:  # a bare IPv6 address, as a setting may give it
        name, port_text = value, None
    else:
        name, port_text = value, None
    if port_text is None or port_text == "":
        return name, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return "", None
    return name, int(port_text)


def _port(value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = -1
    if not 0 <= port < 65536 or isinstance(value, bool):
        raise ConfigError(f"--port (RAG_PORT) must be a port number from 0 to 65535, not {value!r}")
    return port
