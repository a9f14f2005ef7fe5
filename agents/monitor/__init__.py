"""The monitor agent: heartbeat staleness."""
