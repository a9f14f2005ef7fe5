"""The validator agent: runs a phase's gate checks against a clean copy of the workspace."""
