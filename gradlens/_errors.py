"""Exceptions gradlens raises itself. Every one says what was wrong and what to do."""

from __future__ import annotations

__all__ = ["GradlensError", "NoGraphError", "SchemaError"]


class GradlensError(Exception):
    """Base class of every error gradlens raises on its own account."""


class NoGraphError(GradlensError, ValueError):
    """A tensor was given where an autograd graph was expected, but it has no ``grad_fn``."""


class SchemaError(GradlensError, ValueError):
    """A JSON file is not a gradlens record, or not one this version can read."""


def missing_extra(what: str, package: str, extra: str, error: ImportError) -> GradlensError:
    """Returns the error for an optional package that is not installed: ``what`` needs
    ``package``, installed by the ``gradlens[extra]`` extra."""
    return GradlensError(
        f"{what} needs the {package} package ({error}); install it with "
        f"`pip install 'gradlens[{extra}]'`"
    )
