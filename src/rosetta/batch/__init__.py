"""Batch orchestration: jobs that read the raw zone and load a context through its service."""
