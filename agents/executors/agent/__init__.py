"""The `agent` capability: a task carried out by an OpenHands SDK conversation.

The conversation runs in a child process (`session.py`), so the worker itself never
imports the SDK, and a timeout or cancel can end it, its tools and its terminal
commands at once.
"""

from agents.executors.agent.executor import AgentExecutor

__all__ = ["AgentExecutor"]
