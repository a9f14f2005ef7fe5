"""The version of Omoi that is running, as its package metadata says."""

from __future__ import annotations

from importlib import metadata


def omoi_version() -> str:
    try:
        return metadata.version("omoi")
    except metadata.PackageNotFoundError:
        return "unknown"
