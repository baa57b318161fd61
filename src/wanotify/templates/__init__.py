"""Templates in force: the catalogue file (and, later, what is synced from Meta)."""
