"""PINs and key passwords: from an environment variable or a file, never from config text, never shown."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import PinMissing


@dataclass(frozen=True)
class Secret:
    """Where a secret lives. Its repr names the source, never the value."""

    env: str | None = None
    file: Path | None = None

    def __post_init__(self) -> None:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret comes from exactly one of an environment variable or a file")

    @classmethod
    def from_env(cls, name: str) -> Secret:
        return cls(env=name)

    @classmethod
    def from_file(cls, path: str | Path) -> Secret:
        return cls(file=Path(path))

    def reveal(self) -> str:
        """The value, read now (so a rotated secret file is picked up). Raises PinMissing when absent."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise PinMissing(f"environment variable {self.env} is not set")
            return value
        assert self.file is not None
        try:
            return self.file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise PinMissing(f"secret file {self.file}: {exc.strerror}") from None

    def __repr__(self) -> str:
        return f"Secret(env={self.env!r})" if self.env else f"Secret(file={str(self.file)!r})"
