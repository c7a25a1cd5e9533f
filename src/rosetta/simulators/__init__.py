"""Local simulators of the external systems, faithful to their real APIs, for development and tests."""
