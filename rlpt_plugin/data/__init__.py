"""Corpus side of RLPT: reading documents, tokenizing them and cutting (prefix, suffix) windows.

``corpus`` reads JSONL / Parquet / Megatron indexed datasets into numbered :class:`Document`\\ s,
``tokenizer`` wraps local tokenizers behind :class:`rlpt_plugin.types.Tokenizer`, and ``windows``
draws the seeded split points whose suffixes a teacher later rewrites.
"""
