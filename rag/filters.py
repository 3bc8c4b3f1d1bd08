"""Search filters: only notes with every given tag, and (when paths are given) under one of the path patterns.

A filter is resolved against the store before a search: it becomes a Chroma `where` clause (tags with
`$contains`, sources with `$in`), so dense search filters inside Chroma and still returns `k` hits when `k`
matching chunks exist, and the rows of the BM25 index it keeps, which BM25 scores alone. Note paths and their rows
come from the BM25 index; only tags need the store. Path patterns are shell globs
on the note's path relative to the knowledge folder, as `ask --json` names it (`recipes/*`, `*.md`, `work/**`);
`*` also crosses folders. Nothing here searches or writes.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from rag.errors import ConfigError
from rag.load import parse_tags
from rag.store import Store

if TYPE_CHECKING:
    from rag.keyword import KeywordIndex

# How many resolved filters an index keeps (a chat asks a handful; the list is dropped when it fills up).
_REMEMBERED = 64


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

    def where(self, sources: Iterable[str]) -> dict[str, Any] | None:
        """The Chroma clause of this filter, given every note path the store holds (None: no path matches)."""
        clauses: list[dict[str, Any]] = [{"tags": {"$contains": tag}} for tag in self.tags]
        if self.paths:
            chosen = sorted(s for s in set(sources) if self.matches_path(s))
            if not chosen:
                return None
            clauses.append({"source": {"$in": chosen}})
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    def resolve(self, store: Store, keyword: KeywordIndex | None = None) -> Resolved:
        """The `where` clause and the matching rows of `keyword`, the BM25 index of `store`.

        With the index, note paths and a path filter's rows come from it, and only tags ask the store (tags live
        in its metadata), once per filter and index: the result is kept in the index, which a change of the store
        replaces. Without it (dense search only), the store is read for its note paths and the matching ids.
        """
        if keyword is None:
            where = self.where({c.source for c in store.iter_chunks()})
            found = where is not None and bool(store.matching_ids(where))
            return Resolved(where if found else None, None)
        cached = keyword.resolved_filters.get(self)
        if isinstance(cached, Resolved):
            return cached
        sources = [s for s in keyword.sources() if self.matches_path(s)]
        where = self.where(sources)
        if where is None:
            rows = np.zeros(0, dtype=np.int64)
        elif self.tags:
            rows = keyword.rows(store.matching_ids(where))
        else:
            rows = keyword.source_rows(sources)
        resolved = Resolved(where if len(rows) else None, rows)
        if len(keyword.resolved_filters) >= _REMEMBERED:
            keyword.resolved_filters.clear()
        keyword.resolved_filters[self] = resolved
        return resolved


@dataclass(frozen=True)
class Resolved:
    """A filter applied to one store: the Chroma clause (None: nothing can match) and the rows of the BM25 index it
    keeps (None: resolved without the index)."""

    where: dict[str, Any] | None
    rows: np.ndarray | None = field(default=None, compare=False)
