"""Shared kernel: settings, databases, HTTP conventions, security, audit and batch-run records.

It imports no bounded context; every context may import it.
"""
