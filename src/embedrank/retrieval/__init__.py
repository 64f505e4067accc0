"""Retrieval pipelines over the indexes: the Retriever (documents, windows, first stage,
rerank) and score fusion."""
