"""The worker agent: runs tasks for the phases and capabilities it serves."""
