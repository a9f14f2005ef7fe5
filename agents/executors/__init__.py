"""Executors carry out task attempts; one per capability."""

from agents.executors.base import ExecutionContext, Executor
from agents.executors.shell import ShellExecutor

__all__ = ["ExecutionContext", "Executor", "ShellExecutor"]
