"""Re-join a zip archive split into pieces (``x.zip.001`` ... ``x.zip.00N``) and unpack it.

all-mpnet-base-v2 reaches PyPI as five 90 MB packages, each holding one piece of a single
zip. Pieces are streamed into one file next to the target (never held in memory), and
members are streamed out of it; a single top-level folder in the archive is dropped so that
``config.json`` lands directly in the target directory.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

CHUNK = 16 * 1024 * 1024
JUNK = {"desktop.ini", ".DS_Store", "Thumbs.db"}  # files some archivers add; never model files


def join_parts(parts: Sequence[Path], joined: Path) -> None:
    """Concatenate ``parts`` in the given order into ``joined``."""
    with joined.open("wb") as out:
        for part in parts:
            with Path(part).open("rb") as src:
                shutil.copyfileobj(src, out, CHUNK)


def extract_flat(archive: Path, target: Path) -> list[Path]:
    """Unpack ``archive`` into ``target``, dropping one shared top-level folder if present."""
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not m.is_dir() and PurePosixPath(m.filename).name not in JUNK]
        if not members:
            raise ValueError(f"{archive} holds no files")
        names = [PurePosixPath(m.filename) for m in members]
        tops = {n.parts[0] for n in names}
        strip = 1 if len(tops) == 1 and all(len(n.parts) > 1 for n in names) else 0
        written = []
        for member, name in zip(members, names):
            relative = PurePosixPath(*name.parts[strip:])
            if relative.is_absolute() or ".." in relative.parts:
                raise ValueError(f"{archive}: refusing the unsafe member path {member.filename!r}")
            dest = target.joinpath(*relative.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            written.append(dest)
    return written


def extract_split_zip(parts: Sequence[Path], target: Path) -> list[Path]:
    """Re-join ``parts`` into a temporary zip beside ``target`` and unpack it into ``target``."""
    if not parts:
        raise ValueError("no pieces of the split zip were given")
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".joining-") as tmp:
        joined = Path(tmp) / "joined.zip"
        join_parts(parts, joined)
        if not zipfile.is_zipfile(joined):
            raise ValueError(f"the {len(parts)} pieces ({parts[0].name} ...) do not re-join into a zip archive")
        try:
            return extract_flat(joined, target)
        except zipfile.BadZipFile as err:
            raise ValueError(f"the re-joined pieces ({parts[0].name} ...) are a damaged zip: {err}; "
                             f"reinstall the packages that hold them") from err
