"""Retrospective reports as files: retrospective-<window end, UTC>.yaml in one directory."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

_NAME = re.compile(r"^retrospective-(\d{8}T\d{6}Z)\.yaml$")
_FORMAT = "%Y%m%dT%H%M%SZ"


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
        # Write then rename: a reader (or a crash) never sees half a report.
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        return str(path)
