"""Typed errors raised by the library.

Only the CLI and the UI turn these into messages for people; each error's text already says what to do next.
"""

from __future__ import annotations


class RagError(Exception):
    """Base class of every error the library raises on purpose."""


class ConfigError(RagError):
    """A setting (flag or `RAG_*` variable) has an unknown name or an unusable value."""


class SkipNote(RagError):
    """A file under the knowledge folder cannot be indexed; `reason` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class EmptyQuestionError(RagError, ValueError):
    """The question is empty or only white space."""


class ModelError(RagError):
    """The embedding model cannot be loaded offline."""


class StoreError(RagError):
    """The Chroma store is missing, unreachable or was built for another model."""


class IndexLockedError(StoreError):
    """Another process is syncing the same store right now."""


class StoreInUseError(StoreError):
    """An embedded store is held by another long-running process (a chat, a notebook); Chroma's embedded store
    serves one process at a time, so a second one must go through a Chroma server."""


class NoteWriteError(RagError):
    """A new note cannot be written (bad title, name taken, too large, read-only)."""


class EvalInputError(ConfigError):
    """A question file for `rag eval` cannot be read, or a row lacks a field; the message names file, row, field."""
