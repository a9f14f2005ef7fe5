"""The recorder: copies events and dead letters into the DuckDB analytics store."""
