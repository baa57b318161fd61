"""Who may use the API: keys (and, later, tenants)."""
