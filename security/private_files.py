"""Private folders and log files: the state folder is 0700 and what it holds is 0600.

README's settings table and docs/security.md promise it; before these helpers the state
folder and its logs were created with the process's umask (typically 0755 / 0644), so any
local user could list the folder and read the broker's, Postgres's and the worker's logs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

#: What a private folder may grant beyond its owner: nothing, or (``traversable``) only the
#: right to pass through it, for a service account that must reach a subfolder (the embedded
#: Postgres runs as its own system user when Attest runs as root).
FOLDER_MODE = 0o700
TRAVERSABLE_FOLDER_MODE = 0o711
FILE_MODE = 0o600


def private_folder(path: Path, *, traversable: bool = False) -> Path:
    """Create ``path`` (and parents) if needed and make it 0700 (0711 when ``traversable``)."""
    path = Path(path)
    path.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    os.chmod(path, TRAVERSABLE_FOLDER_MODE if traversable else FOLDER_MODE)
    return path


def open_private_log(path: Path) -> BinaryIO:
    """Open ``path`` for appending, created 0600; an existing log is made 0600 too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, "ab")
    except BaseException:
        os.close(fd)
        raise


def touch_private(path: Path) -> Path:
    """Create ``path`` empty if absent; either way leave it 0600."""
    open_private_log(path).close()
    return Path(path)

