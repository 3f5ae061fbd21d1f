"""Config parsing: strict keys and types, overrides, epoch-indexed curriculum values."""

from __future__ import annotations

from pathlib import Path

import pytest

from coda_train.config import ConfigError, at_epoch, load_config, parse_override

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("toml, error", [
    ("[optim]\nlearning_rate = 1e-3\n", r"optim\.learning_rate"),  # an unknown key is named
    ("[optimizer]\nlr = 1e-3\n", r"optimizer"),                     # so is an unknown section
    ('[run]\nsteps = "many"\n', r"run\.steps.*integer"),            # a wrong type names key and type
    ("[run]\nsteps = true\n", r"run\.steps"),                       # a bool is not an int
], ids=["unknown-key", "unknown-section", "wrong-type", "bool-not-int"])
def test_bad_config_error_names_the_key(tmp_path, toml, error):
    f = tmp_path / "c.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError, match=error):
        load_config(f)


def test_int_is_a_float(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[optim]\nlr = 1\n")
    assert load_config(f).optim.lr == 1.0


def test_choice_fields_reject_unknown_values():
    with pytest.raises(ConfigError, match=r"objective\.kind"):
        load_config(None, ["objective.kind=gpt"])


def test_overrides_use_toml_values():
    cfg = load_config(None, ["optim.lr=3e-4", "objective.sampling_eps=[0.001, 0.25]", "run.out_dir=runs/x"])
    assert cfg.optim.lr == 3e-4
    assert cfg.objective.sampling_eps == [0.001, 0.25]
    assert cfg.run.out_dir == "runs/x"
    assert parse_override("run.steps=5") == ("run.steps", 5)
    with pytest.raises(ConfigError, match="section.key"):
        load_config(None, ["lr=3"])


def test_curriculum_lists_are_indexed_by_epoch_modulo_length():
    assert at_epoch([0.001, 0.25, 0.5], 0) == 0.001
    assert at_epoch([0.001, 0.25, 0.5], 4) == 0.25
    assert at_epoch(0.3, 7) == 0.3


def test_probabilities_outside_unit_interval_are_rejected():
    with pytest.raises(ConfigError, match="prefix_probability"):
        load_config(None, ["objective.prefix_probability=[0.1, 1.5]"])


def test_config_round_trips_through_toml(tmp_path):
    cfg = load_config(None, ["objective.mask_block_sizes=[2, 4]", "model.tokenizer=tok"])
    f = tmp_path / "c.toml"
    f.write_text(cfg.to_toml())
    assert load_config(f) == cfg


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_parse(path):
    load_config(path)
