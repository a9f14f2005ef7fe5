"""The DuckDB analytics store fed from the event stream. Arrives with its own issue."""
