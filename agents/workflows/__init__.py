"""Shipped workflow templates (TOML files in this folder)."""
