"""Datasets for alignment: formats, validation, tokenisation, collators.

The path from a file to a batch:

    rows = load_rows("train.jsonl")                      # validated, normalised dicts (Rows: a list)
    examples = tokenize_sft(rows, tokenizer, 1024)       # or tokenize_preferences(...)
    batch = SFTCollator(tokenizer.pad_token_id)(examples[:8])   # or PreferenceCollator(...)

* :mod:`.formats`: the six row formats (prompt_completion, messages, preference, hh_rlhf, prompt, gsm8k),
  auto-detection from the keys, per-row validation and normalisation, the HH-RLHF prompt split.
* :mod:`.loading`: :func:`load_rows` from JSONL/JSON files (gzip too), lists of dicts and
  ``datasets.Dataset``; ``skip_invalid`` drops bad rows and counts them.
* :mod:`.chat`: chat messages -> text (the tokenizer's chat template, or a documented default).
* :mod:`.tokenize`: :func:`tokenize_sft`, :func:`tokenize_preferences`; truncation is explicit.
* :mod:`.collate`: :class:`SFTCollator`, :class:`PreferenceCollator` (chosen and rejected in one batch),
  :func:`pack_sft`.
* :mod:`.errors`: :class:`DataError`, which names the file, the row and the field.

Importing this package loads torch and the standard library only: the tokenizer is the caller's, and
``datasets`` objects are recognised without importing ``datasets``.
"""

from .chat import DEFAULT_GENERATION_PROMPT, DEFAULT_MESSAGE_FORMAT, render_messages, split_messages
from .errors import DataError
from .formats import FORMATS, REQUIRED_COLUMNS, detect_format, normalize_row, split_hh_rlhf, validate_messages
from .loading import Rows, load_rows
from .tokenize import TRUNCATION_MODES, Examples, tokenize_preferences, tokenize_sft

__all__ = [
    "DEFAULT_GENERATION_PROMPT",
    "DEFAULT_MESSAGE_FORMAT",
    "FORMATS",
    "REQUIRED_COLUMNS",
    "TRUNCATION_MODES",
    "DataError",
    "Examples",
    "PreferenceCollator",
    "Rows",
    "SFTCollator",
    "detect_format",
    "load_rows",
    "normalize_row",
    "pack_sft",
    "render_messages",
    "split_hh_rlhf",
    "split_messages",
    "tokenize_preferences",
    "tokenize_sft",
    "validate_messages",
]

_COLLATE = ("PreferenceCollator", "SFTCollator", "pack_sft")  # torch: imported on first use


def __getattr__(name: str):
    if name in _COLLATE:
        from . import collate

        return getattr(collate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
