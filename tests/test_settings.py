"""One table of settings: the server's defaults are the only defaults, and every layer spells them from it.

The editors must not decide defaults: VS Code's package.json declares each server setting with the
server's own default (shown in its Settings UI), the extension sends only what the user set, and the
Neovim plugin leaves every server setting nil. `streaming` is the clients' own switch (they draw the
partials), so both plugins turn it on.
"""

from __future__ import annotations

import json
from dataclasses import replace
import re
from pathlib import Path

import pytest

from coda_lsp.cli import oneshot_parser, options_from
from coda_lsp.options import BY_WIRE, SETTINGS, ServerOptions, merge_options, wire_defaults
from coda_model import DecodeConfig

EDITORS = Path(__file__).resolve().parent.parent / "editors"
CLIENT_OWNED = {"streaming"}   # plugins draw partial completions, so they ask for them


def _vscode_properties() -> dict:
    pkg = json.loads((EDITORS / "vscode" / "package.json").read_text(encoding="utf-8"))
    return {k.removeprefix("coda."): v for k, v in pkg["contributes"]["configuration"]["properties"].items()}


def test_server_decode_defaults_are_the_editor_preset():
    assert ServerOptions().decode == DecodeConfig.editor()
    assert DecodeConfig.editor() != DecodeConfig() and DecodeConfig.paper().temperature > 0


def test_vscode_declares_every_server_setting_with_the_servers_default():
    props, defaults = _vscode_properties(), wire_defaults()
    assert set(BY_WIRE) <= set(props), f"missing in package.json: {set(BY_WIRE) - set(props)}"
    for wire, default in defaults.items():
        if wire in CLIENT_OWNED or "default" not in props[wire]:
            continue
        declared = props[wire]["default"]
        declared = None if declared == "" else declared
        expected = list(default) if isinstance(default, tuple) else default
        assert declared == expected, f"coda.{wire}: package.json says {declared!r}, the server {default!r}"


def test_vscode_sends_the_server_keys_and_only_what_the_user_set():
    src = (EDITORS / "vscode" / "src" / "settings.ts").read_text(encoding="utf-8")
    keys = re.search(r"SERVER_KEYS = \[(.*?)\] as const", src, re.S).group(1)
    assert set(re.findall(r"'(\w+)'", keys)) == set(BY_WIRE)
    body = src[src.index("export function serverOptions"):]
    assert "c.inspect" in body and "globalValue" in body     # user-set values, not package.json defaults


def test_neovim_maps_every_server_setting_and_leaves_its_default_to_the_server():
    lua = (EDITORS / "nvim" / "lua" / "coda" / "config.lua").read_text(encoding="utf-8")
    mapping = dict(re.findall(r"^\s*(\w+) = '(\w+)',", lua[lua.index("M.server_keys"):], re.M))
    assert set(mapping.values()) == set(BY_WIRE)
    defaults = lua[lua.index("M.defaults"):lua.index("M.server_keys")]
    for snake, wire in mapping.items():
        value = re.search(rf"^\s*{snake} = ([^,]+),", defaults, re.M).group(1).strip()
        assert value == "nil" or wire in CLIENT_OWNED, f"nvim {snake} defaults to {value}, not the server's"


def test_command_line_flags_come_from_the_table_and_reject_what_the_lsp_would_warn_about():
    parser = oneshot_parser("complete")
    flags = {a.dest: a.option_strings[0] for a in parser._actions if a.dest in BY_WIRE}
    assert flags == {s.wire: s.cli_flag for s in SETTINGS if s.cli_flag}
    opts = options_from(parser.parse_args(["a.py:1:1", "--block-length", "4", "--threshold", "none"]), parser)
    assert (opts.decode.block_length, opts.decode.threshold) == (4, None)
    assert merge_options(ServerOptions(), {"blockLength": 4, "threshold": None})[0] == opts
    with pytest.raises(SystemExit):
        options_from(parser.parse_args(["a.py:1:1", "--block-length", "0"]), parser)


@pytest.mark.parametrize("wire,bad", [("steps", 0), ("steps", 2.5), ("blockLength", -1), ("threshold", 1.5),
                                      ("algorithm", "magic"), ("cache", "lru"), ("temperature", True)])
def test_a_bad_decode_value_is_reported_by_the_decode_config_and_the_old_value_kept(wire, bad):
    opts, warnings = merge_options(ServerOptions(), {wire: bad})
    assert opts == ServerOptions() and len(warnings) == 1 and wire in warnings[0]


def test_a_whole_settings_section_resets_absent_keys_and_keeps_the_old_value_on_a_bad_one():
    from coda_lsp.options import settings_section
    base = replace(ServerOptions(), debounce_ms=5)                    # the server's defaults (command line)
    previous, _ = merge_options(base, {"steps": 4, "maxTokens": 8, "temperature": 0.5})
    now, warnings = settings_section(base, previous, {"coda": {"maxTokens": 12, "temperature": "hot"}})
    assert now.decode.steps == base.decode.steps and now.max_tokens == 12   # steps removed: default again
    assert now.decode.temperature == 0.5 and len(warnings) == 1           # bad value: the old one stays
    assert now.debounce_ms == 5                                            # absent: the server's, not a constant
