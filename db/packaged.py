"""Find the files installed with candlecast outside its Python packages.

The wheel ships config.toml (the default configuration), alembic.ini and alembic/ (the migrations)
as the `candlecast_files` data package (see pyproject.toml): site-packages/candlecast_files when
installed, the repository root itself in a checkout (editable install). It has no __init__.py, so
it is a namespace package; it is located through its import spec rather than
importlib.resources.files(), which on Python 3.11 rejects the placeholder entry that setuptools'
editable finder adds to a namespace package's path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

FILES_PACKAGE = "candlecast_files"


def files_dir(required: str = "alembic.ini") -> Path | None:
    """The installed directory of `candlecast_files` that holds `required`, or None if none does."""
    try:
        spec = importlib.util.find_spec(FILES_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.submodule_search_locations is None:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location)
        if (candidate / required).is_file():
            return candidate.resolve()
    return None
