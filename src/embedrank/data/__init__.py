"""Data in and out: BEIR folders, corpus files, qrels and runs, and retrieval evaluation."""
