"""The `finops` bounded context. Its public surface is `service` (use cases) and `schemas` (DTOs)."""
