"""The web chat over the `rag` library: `python -m demo` serves it; `demo.app.build_app` builds it."""
