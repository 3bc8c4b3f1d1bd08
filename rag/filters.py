"""Search filters: only notes with every given tag, and (when paths are given) under one of the path patterns.

A filter is resolved against the store before a search: it becomes a Chroma `where` clause (tags with
`$contains`, sources with `$in`), so dense search filters inside Chroma and still returns `k` hits when `k`
matching chunks exist, and the set of matching chunk ids, which BM25 scores alone. Path patterns are shell globs
on the note's path relative to the knowledge folder, as `ask --json` names it (`recipes/*`, `*.md`, `work/**`);
`*` also crosses folders. Nothing here searches or writes.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from rag.errors import ConfigError
from rag.load import parse_tags
from rag.store import Store


@dataclass(frozen=True)
class SearchFilter:
    """Every tag in `tags` (case as written in the notes) and any pattern in `paths`; empty parts match all."""

    tags: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()

    @classmethod
    def of(cls, tags: Iterable[str] | str | None = None, paths: Iterable[str] | str | None = None) -> SearchFilter:
        """A filter from user input: tags parsed as everywhere (`parse_tags`: commas, `#` dropped), paths as given.

        Raises:
            ConfigError: a path pattern is empty or absolute.
        """
        tag_values = parse_tags([tags] if isinstance(tags, str) else list(tags or []))
        path_values = [paths] if isinstance(paths, str) else list(paths or [])
        cleaned = []
        for pattern in path_values:
            pattern = pattern.strip().replace("\\", "/")
            if not pattern:
                continue
            if pattern.startswith("/"):
                raise ConfigError(f"--path {pattern!r}: give a pattern relative to the knowledge folder, e.g. notes/*")
            cleaned.append(pattern.removeprefix("./"))
        return cls(tuple(tag_values), tuple(cleaned))

    def __bool__(self) -> bool:
        return bool(self.tags or self.paths)

    def matches_path(self, source: str) -> bool:
        return not self.paths or any(fnmatch.fnmatchcase(source, p) for p in self.paths)

    def describe(self) -> str:
        """The filter in words, for messages: "tag 'ml' and path 'notes/*'"."""
        return " and ".join([f"tag {t!r}" for t in self.tags] + [f"path {p!r}" for p in self.paths])

    def resolve(self, store: Store, sources: Sequence[str]) -> Resolved:
        """The `where` clause and the matching chunk ids in `store`, given every note path it holds."""
        clauses: list[dict[str, Any]] = [{"tags": {"$contains": tag}} for tag in self.tags]
        if self.paths:
            chosen = sorted(s for s in set(sources) if self.matches_path(s))
            if not chosen:
                return Resolved(None, frozenset())
            clauses.append({"source": {"$in": chosen}})
        where = clauses[0] if len(clauses) == 1 else {"$and": clauses}
        return Resolved(where, frozenset(store.matching_ids(where)))


@dataclass(frozen=True)
class Resolved:
    """A filter applied to one store: the Chroma clause (None: nothing can match) and the chunks it keeps."""

    where: dict[str, Any] | None
    ids: frozenset[str]
