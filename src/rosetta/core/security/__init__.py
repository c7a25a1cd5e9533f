"""Security core: token validation, principals, roles and permissions, and route guards."""
