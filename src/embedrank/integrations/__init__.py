"""Optional integrations with other systems; each needs its extra and is imported on its own,
so ``import embedrank`` never needs a database driver or a cluster.

``embedrank.integrations.pgvector``: :class:`PgVectorIndex`, a Postgres table with pgvector
columns (``pip install 'embedrank[pgvector]'``). ``embedrank.integrations.ray``: encoding a Ray
Dataset on many actors or machines into Parquet (``pip install 'embedrank[ray]'``);
``embedrank.integrations.parquet``: reading those files back and into an index.
"""
