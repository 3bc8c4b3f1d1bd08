"""A local knowledge base: Markdown notes loaded, chunked, embedded, stored in Chroma and retrieved by similarity."""

from rag.chunk import CHUNKER_VERSION, Chunk, chunk_note
from rag.config import Config
from rag.embed import Embedder, SentenceTransformerEmbedder, embed_query, make_embedder
from rag.errors import (
    ConfigError,
    EmptyQuestionError,
    IndexLockedError,
    ModelError,
    NoteWriteError,
    RagError,
    SkipNote,
    StoreError,
)
from rag.knowledge import KnowledgeBase, Status, ask, shared_knowledge_base
from rag.load import Note, find_notes, load_note, parse_note
from rag.retrieve import Hit, SearchResult, search
from rag.store import Store
from rag.sync import FileStatus, Skipped, SyncReport, folder_status, sync_folder
from rag.write import NewNote, write_note

__all__ = [
    "CHUNKER_VERSION",
    "Chunk",
    "Config",
    "ConfigError",
    "Embedder",
    "EmptyQuestionError",
    "FileStatus",
    "Hit",
    "IndexLockedError",
    "KnowledgeBase",
    "ModelError",
    "NewNote",
    "Note",
    "NoteWriteError",
    "RagError",
    "SearchResult",
    "SentenceTransformerEmbedder",
    "SkipNote",
    "Skipped",
    "Status",
    "Store",
    "StoreError",
    "SyncReport",
    "ask",
    "chunk_note",
    "embed_query",
    "find_notes",
    "folder_status",
    "load_note",
    "make_embedder",
    "parse_note",
    "search",
    "shared_knowledge_base",
    "sync_folder",
    "write_note",
]
