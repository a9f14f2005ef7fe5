"""The delivery role: finished tickets pushed to their repositories, pull requests opened."""
