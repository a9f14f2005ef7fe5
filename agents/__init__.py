"""Agent processes: planner, worker, monitor, and the supervisor that runs them together."""

from agents.base import Agent
from agents.settings import Settings

__all__ = ["Agent", "Settings"]
