"""A local knowledge base: Markdown notes loaded, chunked, embedded, stored in Chroma and retrieved by similarity."""

from rag.answer import Answer, Answerer, BusyError
from rag.chunk import CHUNKER_VERSION, Chunk, chunk_note, context_line, heading_text
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
    StoreInUseError,
)
from rag.figure import Figure, map
from rag.filters import SearchFilter
from rag.generate import AnswerWriter, ExtractiveWriter, LocalModelWriter, RemoteModelWriter, make_writer
from rag.knowledge import KnowledgeBase, Rebuild, Status, Verification, ask, shared_knowledge_base
from rag.load import Note, find_notes, load_note, parse_note, parse_tags
from rag.passage import Source, gather_sources
from rag.rerank import CrossEncoderReranker, Reranker
from rag.retrieve import Hit, SearchResult, search
from rag.store import Build, Store
from rag.sync import FileStatus, Skipped, SyncReport, folder_status, sync_folder
from rag.write import NewNote, write_note

__all__ = [
    "Answer",
    "CrossEncoderReranker",
    "Reranker",
    "SearchFilter",
    "Answerer",
    "AnswerWriter",
    "BusyError",
    "ExtractiveWriter",
    "LocalModelWriter",
    "RemoteModelWriter",
    "Source",
    "gather_sources",
    "make_writer",
    "Build",
    "CHUNKER_VERSION",
    "Chunk",
    "Config",
    "ConfigError",
    "Embedder",
    "EmptyQuestionError",
    "FileStatus",
    "Figure",
    "Hit",
    "IndexLockedError",
    "KnowledgeBase",
    "ModelError",
    "NewNote",
    "Note",
    "NoteWriteError",
    "RagError",
    "Rebuild",
    "SearchResult",
    "SentenceTransformerEmbedder",
    "SkipNote",
    "Skipped",
    "Status",
    "Store",
    "StoreError",
    "StoreInUseError",
    "SyncReport",
    "Verification",
    "ask",
    "chunk_note",
    "context_line",
    "embed_query",
    "find_notes",
    "folder_status",
    "heading_text",
    "load_note",
    "make_embedder",
    "map",
    "parse_note",
    "parse_tags",
    "search",
    "shared_knowledge_base",
    "sync_folder",
    "write_note",
]
