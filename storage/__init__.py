"""Storage: the only code that speaks SQL. Synchronous; the daemon reaches it through AsyncStore."""
