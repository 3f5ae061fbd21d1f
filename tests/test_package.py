"""The public `coda_model` surface: lazy torch-backed names and the shipped model's location."""

from __future__ import annotations

import subprocess
import sys

import coda_model


def test_public_names_resolve_to_their_modules():
    from coda_model import checkpoint, engine

    assert coda_model.Engine is engine.Engine
    assert coda_model.load_model is checkpoint.load_model
    assert (coda_model.default_model_path() / "config.json").is_file()


def test_unknown_name_is_an_attribute_error():
    try:
        coda_model.NoSuchThing  # noqa: B018
    except AttributeError as e:
        assert "NoSuchThing" in str(e)
    else:
        raise AssertionError("coda_model.NoSuchThing resolved")


def test_import_does_not_load_torch():
    code = "import sys, coda_model; coda_model.default_model_path(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
