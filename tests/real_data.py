"""Where the tests find the real data sets (IAM-OnDB, PTB): the folder HANDWRITING_HM_DATA names,
by default `shared/data` beside the repository. Tests on real data skip, saying where they looked."""
from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENT_VARIABLE = "HANDWRITING_HM_DATA"
DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATA = Path(os.environ.get(ENVIRONMENT_VARIABLE) or DEFAULT)


def not_found(what: str, folder: str) -> str:
    """The skip reason of a test whose data, DATA / folder, is absent: where it looked, and how to point elsewhere."""
    return (f"{what} not found at {DATA / folder} (set {ENVIRONMENT_VARIABLE} to the folder that holds {folder}/; "
            f"default {DEFAULT})")
