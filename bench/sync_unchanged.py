"""Sync of an unchanged folder: 5,000 small notes indexed once, then re-synced with nothing changed.

    python bench/sync_unchanged.py --notes 5000 --workdir /tmp/rag-sync5k

The first run generates the notes and indexes them (kept in --workdir); every run then times --repeats
unchanged syncs: in one open `KnowledgeBase` (warm) and in a new one each time (opens the store too).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rag.config import Config  # noqa: E402
from rag.knowledge import KnowledgeBase  # noqa: E402

WORDS = (
    "vector index note chunk model query cosine score store folder embedding token search answer keyword "
    "heading title section paragraph retrieval ranking similarity document sentence meaning"
).split()


def generate(folder: Path, count: int) -> None:
    rng = random.Random(5)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        body = " ".join(rng.choice(WORDS) for _ in range(40))
        (folder / f"note-{i:05d}.md").write_text(f"# Note {i}\n\n{body}.\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notes", type=int, default=5000)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    notes = args.workdir / "notes"
    if not notes.exists():
        generate(notes, args.notes)
    config = Config.from_env().replace(knowledge_dir=notes, db_dir=args.workdir / "db")
    started = time.perf_counter()
    first = KnowledgeBase(config).sync(progress=sys.stderr.isatty())
    print(
        f"first sync: {first.added} added, {first.unchanged} unchanged, {first.chunks} chunks "
        f"({time.perf_counter() - started:.1f} s)"
    )
    kb = KnowledgeBase(config)
    warm, fresh = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        report = kb.sync()
        warm.append(time.perf_counter() - t0)
        assert report.unchanged == first.notes and not (report.added or report.updated or report.removed), report
        t0 = time.perf_counter()
        KnowledgeBase(config).sync()
        fresh.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    states = kb.store.note_states()
    read_states = time.perf_counter() - t0
    row = {
        "notes": len(states),
        "warm_median_s": round(statistics.median(warm), 3),
        "fresh_median_s": round(statistics.median(fresh), 3),
        "note_states_s": round(read_states, 3),
        "warm_runs": [round(w, 3) for w in warm],
        "torch_imported": "torch" in sys.modules,
    }
    print(
        f"unchanged sync of {row['notes']} notes: median {row['warm_median_s']} s in an open knowledge base, "
        f"{row['fresh_median_s']} s opening it anew; reading the store's note states {row['note_states_s']} s"
    )
    print(json.dumps(row))


if __name__ == "__main__":
    main()
