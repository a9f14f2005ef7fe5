"""The `omoi` command line interface."""
