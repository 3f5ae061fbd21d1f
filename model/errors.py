"""Errors raised by coda_model, each carrying a one-line message that says what to do."""

from __future__ import annotations

import json
from pathlib import Path


class ModelLoadError(Exception):
    """A model directory could not be loaded; the message names the file and the fix."""


class ModelSaveError(ModelLoadError):
    """A model cannot be written in a layout that loads back; the message says what to keep instead.

    A kind of ModelLoadError so the command lines that already report load errors in one line report it too."""


def read_json_object(path: Path) -> dict:
    """A model directory's JSON file as a dict, or a ModelLoadError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc}): restore it from the original model download") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must hold a JSON object: restore it from the original model download")
    return data
