"""Retrospective reports as files: retrospective-<window end, UTC>.yaml in one directory."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

_NAME = re.compile(r"^retrospective-(\d{8}T\d{6}Z)\.yaml$")
_FORMAT = "%Y%m%dT%H%M%SZ"
# Readable by whoever reads the reports, as a plain write makes a file (no secrets in one).
REPORT_MODE = 0o644


class DirectoryReportArchive:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def latest(self) -> datetime | None:
        if not self.directory.is_dir():
            return None
        ends = [
            datetime.strptime(m.group(1), _FORMAT).replace(tzinfo=UTC)
            for p in self.directory.iterdir()
            if (m := _NAME.match(p.name))
        ]
        return max(ends, default=None)

    def write(self, until: datetime, text: str) -> str:
        if until.microsecond:
            # The name keeps whole seconds: `latest` would not give this end back.
            raise ValueError(f"a report's window ends on a whole second, not {until}")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"retrospective-{until.astimezone(UTC).strftime(_FORMAT)}.yaml"
        # Write, fsync, then rename, then fsync the directory: a reader never sees half
        # a report, and a crash never leaves a name without its bytes. The name is what
        # `latest` remembers: an empty file under it would count as written for good.
        # The temporary name is unique, so two writers never write into one file.
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(f.fileno(), REPORT_MODE)  # mkstemp makes it 0600
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_directory(self.directory)
        return str(path)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (POSIX: the entry lives in the directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
