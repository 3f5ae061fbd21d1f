"""Model references: a directory, or a Hugging Face repo id resolved from the local cache, offline.

`--model Salesforce/CoDA-v0-Instruct` (and the server's `modelPath`) finds the snapshot that
`hf download` / `huggingface-cli download` left in the cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
~/.cache/huggingface/hub) through huggingface_hub's own cache lookup, which never opens a connection.
`repo@revision` picks a branch, tag or commit other than `main`. Torch-free.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from coda_model.errors import ModelLoadError

# owner/name as the Hub spells repo ids, optionally @revision
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}(@[\w./-]+)?$")


def looks_like_repo_id(ref: str) -> bool:
    return bool(REPO_ID.match(ref)) and not ref.startswith((".", "/", "~"))


def hub_cache_dir() -> Path:
    """The cache huggingface_hub reads (HF_HUB_CACHE / HF_HOME are applied when it is imported)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def download_hint(repo_id: str) -> str:
    return f"`hf download {repo_id}` (or `huggingface-cli download {repo_id}`)"


def resolve_model_ref(ref: str, cache_dir: Optional[Path] = None) -> Path:
    """An existing directory as given, else the cached snapshot of a repo id; a ModelLoadError otherwise."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if not looks_like_repo_id(ref):
        raise ModelLoadError(f"model directory {path} does not exist: pass --model PATH to a Hugging Face model "
                             "directory (config.json, tokenizer files, *.safetensors) or a repo id in your HF cache")
    repo_id, _, revision = ref.partition("@")
    from huggingface_hub import try_to_load_from_cache

    cache = Path(cache_dir) if cache_dir else hub_cache_dir()
    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=str(cache), revision=revision or None)
    if not isinstance(found, str):  # None (not cached) or the 'known missing' sentinel
        where = f" at revision {revision}" if revision else ""
        raise ModelLoadError(f"{repo_id}{where} is neither a directory nor in the Hugging Face cache ({cache}): "
                             f"download it with {download_hint(repo_id)}")
    return Path(found).parent
