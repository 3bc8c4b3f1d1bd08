"""`python -m rag`: the command line (see `rag.cli`)."""

import os
import sys

# Quiet on a terminal: transformers draws a bar for the tenth of a second it takes to load the model's weights.
# The library leaves the environment alone; the entry point may set it for its own process.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# Start-up workaround, kept in the entry point and out of the library: chromadb imports jsonschema, which compiles
# the optional rfc3987-syntax IRI grammar at import whenever that package is installed (Jupyter brings it), and
# Chroma never checks IRI formats for us. Measured with `python -X importtime -c "import chromadb"`, three runs on
# the 2-core build machine while other work ran: 2.8 / 3.7 / 5.0 s with the grammar, 1.1 / 1.5 / 1.7 s without.
if "rfc3987_syntax" not in sys.modules:
    sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]

from rag.cli import main  # noqa: E402 - after the workaround above, which must precede chromadb's import

sys.exit(main())
