"""Who calls: JWT verification and roles (tokens), routing headers (routing)."""
