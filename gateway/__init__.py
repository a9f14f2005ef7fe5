"""The HTTP gateway (Litestar) over the bus. Arrives with its own issue."""
