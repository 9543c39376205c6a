"""What a bulk ingest reports: its progress while it runs, and per file and in total what
became of the rows (:func:`memberwise.events.bulk.ingest_paths` returns a :class:`BulkResult`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class Progress:
    """Where an ingest is: file ``index`` (1-based) of ``files``, rows read from it so far and
    the fraction of it done (by rows for Parquet, by bytes for text files)."""

    path: Path
    index: int
    files: int
    rows: int
    fraction: float


ProgressCallback = Callable[[Progress], None]


@dataclass
class FileResult:
    """What happened to one source file."""

    path: Path
    format: str
    fingerprint: str
    status: Literal["ingested", "skipped", "failed"]
    rows_read: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    files_written: int = 0
    deadletter: Path | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "fingerprint": self.fingerprint,
            "status": self.status,
            "rows_read": self.rows_read,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "files_written": self.files_written,
            "deadletter": str(self.deadletter) if self.deadletter else None,
            "error": self.error,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class BulkResult:
    """Per file and in total: rows read, accepted, duplicates, rejected; skipped and failed
    files; dead-letter paths; seconds."""

    files: list[FileResult]
    seconds: float

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def accepted(self) -> int:
        return sum(f.accepted for f in self.files)

    @property
    def duplicates(self) -> int:
        return sum(f.duplicates for f in self.files)

    @property
    def rejected(self) -> int:
        return sum(f.rejected for f in self.files)

    @property
    def skipped_files(self) -> list[Path]:
        return [f.path for f in self.files if f.status == "skipped"]

    @property
    def failed_files(self) -> list[tuple[Path, str]]:
        return [(f.path, f.error or "failed") for f in self.files if f.status == "failed"]

    @property
    def deadletter_paths(self) -> list[Path]:
        return [f.deadletter for f in self.files if f.deadletter and f.status == "ingested"]

    @property
    def ok(self) -> bool:
        """True when every file was ingested or skipped (bad rows are not a failure)."""
        return not self.failed_files

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": [f.to_dict() for f in self.files],
            "rows_read": self.rows_read,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "skipped_files": [str(p) for p in self.skipped_files],
            "failed_files": [{"path": str(p), "error": e} for p, e in self.failed_files],
            "deadletter_paths": [str(p) for p in self.deadletter_paths],
            "seconds": round(self.seconds, 3),
        }
