"""The one configuration error type, shared by every package's settings."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting is missing, unknown, mistyped or impossible.

    The message reads ``FILE: SECTION.KEY: what is wrong`` (the parts that are known), which is what
    the person editing the file needs; ``file``, ``section`` and ``key`` are kept for callers that
    want them separately.  A ``ValueError`` so that code catching bad values keeps working.
    """

    def __init__(
        self, message: str, *, file: str | None = None, section: str | None = None, key: str | None = None
    ) -> None:
        self.message = message
        self.file = file
        self.section = section
        self.key = key
        where = ".".join(part for part in (section, key) if part)
        super().__init__(": ".join(part for part in (file, where, message) if part))

    def located(self, *, file: str | None = None, section: str | None = None) -> ConfigError:
        """The same error with the file (and section) filled in where the raiser did not know them:
        a settings class checks its values without knowing which file they came from."""
        return ConfigError(
            self.message, file=self.file or file, section=self.section or section, key=self.key
        )
