"""PostgreSQL: the asyncpg pool and the versioned SQL migrations."""
