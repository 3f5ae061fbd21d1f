"""Errors raised by coda_model, each carrying a one-line message that says what to do."""


class ModelLoadError(Exception):
    """A model directory could not be loaded; the message names the file and the fix."""
