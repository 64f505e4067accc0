"""Helpers with one home each, shared by every layer: threads, files, documents."""
