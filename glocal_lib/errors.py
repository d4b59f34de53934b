"""Errors raised for bad user input.

Every message names the offending file or value and says how to fix it, so that a user never has
to read a traceback from deep inside torch or PIL to learn that a folder is missing.
"""

from __future__ import annotations


class GlocalError(Exception):
    """Base class: a problem with the user's input or environment, explained in the message."""


class ConfigError(GlocalError):
    """An unknown preset, option or an inconsistent combination of options."""


class WeightsError(GlocalError):
    """A backbone weight file or checkpoint is missing, corrupt or of the wrong kind."""


class DataError(GlocalError):
    """A dataset folder, index, image or mask is missing or inconsistent."""


class MetricInputError(GlocalError):
    """Inputs to a metric are unusable (NaN/inf, empty, shape mismatch)."""
