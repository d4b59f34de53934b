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


def describe_load_failure(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in our words.

    Torch's own message advises re-running with ``weights_only=False``, which would execute
    whatever the file contains; a message shown to users must never relay that advice.
    """
    text = str(exc)
    if "Unsupported global" in text:
        name = text.split("Unsupported global:", 1)[1].split(" was ", 1)[0].strip()
        return f"it holds pickled Python objects ({name}), which are never unpickled (unsafe)"
    if isinstance(exc, EOFError) or "truncated" in text.lower() or "unexpected end" in text.lower():
        return "the file is truncated (an interrupted download or copy?)"
    if "PytorchStreamReader" in text or "zip archive" in text.lower() or "central directory" in text:
        return "it is a damaged zip archive (truncated or corrupted)"
    if "weights_only" in text or "invalid load key" in text or type(exc).__name__ == "UnpicklingError":
        return "its bytes are not a PyTorch/pickle serialisation"
    first = text.strip().splitlines()[0][:200] if text.strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class RunError(GlocalError):
    """A run could not be carried out or finished: non-finite loss, unwritable folder, lock, device."""


class DiskFullError(RunError):
    """No space left on the device a run, cache or checkpoint is written to."""
