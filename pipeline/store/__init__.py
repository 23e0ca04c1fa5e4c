"""The corpus store: an SQLite file mirroring eScriptorium's tables (see ``schema``).

``Corpus`` opens a corpus, reads documents and parts lazily (async) and writes in transactions.
"""

from pipeline.store.corpus import Corpus

__all__ = ["Corpus"]
