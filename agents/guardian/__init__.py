"""The guardian: steps in when the monitor finds a broken worker or a poison task."""
