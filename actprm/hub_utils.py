"""Telling a Hub repo id from a local path, and the download options of ``from_pretrained`` (no torch here).

Both use `huggingface_hub`'s own rules: `validate_repo_id` for ids and `cached_file`'s download keywords.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
"""Keyword arguments of ``from_pretrained`` that say where and how to fetch files (those of `cached_file`)."""


def download_options(options: Mapping[str, Any], *, trust_remote_code: bool = False) -> dict[str, Any]:
    """The `HUB_KWARGS` (and ``trust_remote_code`` if asked) that ``options`` sets to something other than None.

    Example:
        ```py
        >>> from actprm.hub_utils import download_options
        >>> download_options({"revision": "main", "token": None, "dtype": "bfloat16"})
        {'revision': 'main'}
        ```
    """
    keys = (*HUB_KWARGS, "trust_remote_code") if trust_remote_code else HUB_KWARGS
    return {key: options[key] for key in keys if options.get(key) is not None}


def hub_repo_id(name: str | os.PathLike[str] | None, *, namespaced: bool = False) -> str | None:
    """``name`` as a Hub repo id when it is one and no local file or folder of that name exists, else ``None``.

    Args:
        name: a local path or a Hub repo id.
        namespaced: accept only ``namespace/name`` ids (datasets), not a bare ``name`` (such as ``gpt2``).

    Example:
        ```py
        >>> from actprm.hub_utils import hub_repo_id
        >>> hub_repo_id("Qwen/ProcessBench"), hub_repo_id("gpt2"), hub_repo_id("gpt2", namespaced=True)
        ('Qwen/ProcessBench', 'gpt2', None)
        ```
    """
    if not name or Path(name).exists() or (namespaced and "/" not in str(name)):
        return None
    try:
        validate_repo_id(str(name))
    except HFValidationError:
        return None
    return str(name)
