"""Stores outside embedrank that speak its index protocol.

``embedrank.integrations.pgvector``: :class:`PgVectorIndex`, a Postgres table with pgvector
columns (extra: ``pip install 'embedrank[pgvector]'``). Each integration is imported on its
own, so ``import embedrank`` never needs a database driver.
"""
