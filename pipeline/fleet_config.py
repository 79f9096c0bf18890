"""Settings of the deployed fleet: home gateways uploading, ingest replicas receiving (``[fleet]``).

One dataclass for both ends so a reader sees, side by side, what a gateway sends and what a replica
accepts.  The gateway credential is never a setting or a flag (``ps`` shows flags, configuration
files get copied around): it comes from ``$HEMS_GATEWAY_CREDENTIAL`` or from the file named by
``credential_file`` / ``$HEMS_GATEWAY_CREDENTIAL_FILE`` (systemd's ``LoadCredential=`` puts it in
such a file).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import config
from config import ConfigError

SECTION = "fleet"
CREDENTIAL_ENV = "HEMS_GATEWAY_CREDENTIAL"
CREDENTIAL_FILE_ENV = "HEMS_GATEWAY_CREDENTIAL_FILE"
UPLOAD_URL_ENV = "HEMS_UPLOAD_URL"


@dataclass(frozen=True)
class FleetConfig:
    # -- a home gateway (``hems collect --upload-url``) --
    upload_url: str | None = None
    credential_file: str | None = None
    # One upload per this many seconds at most (the writer's batch delay in gateway mode): a home's
    # ten devices make ~8 readings per 10 s, so one request carries a poll round.
    upload_interval_s: float = 10.0
    upload_timeout_s: float = 30.0
    upload_backoff_max_s: float = 30.0  # the longest wait between two attempts while the fleet is away
    upload_max_points: int = 5000  # per request; a longer spool record goes in several
    ca_file: str | None = None  # a private CA for the fleet's TLS certificate
    keep_local: bool = False  # also keep the home's readings in the embedded store (its own dashboard)
    # -- an ingest replica (``hems serve --role ingest``) --
    ingest_max_body_bytes: int = 8 * 2**20  # as received (gzip'd)
    ingest_max_inflated_bytes: int = 64 * 2**20  # after gunzip: a small body cannot become a huge one
    ingest_max_points: int = 100_000  # lines per request
    # Saturation: points accepted but not yet durable beyond this -> 429 Retry-After.
    ingest_max_pending_points: int = 200_000
    # The store is down and this replica's spool already holds this many -> 503: gateways keep their
    # readings in their own spools (one per home) rather than on one replica's disk.
    ingest_max_spooled_points: int = 2_000_000
    ingest_retry_after_s: float = 5.0  # told to a gateway on 429
    ingest_unavailable_retry_after_s: float = 30.0  # on 503
    ingest_rate_per_s: float = 2.0  # requests per second per gateway credential (0: no limit)
    ingest_burst: float = 30.0
    ingest_batch_memory_s: float = 600.0  # how long a replica remembers a committed batch id

    def __post_init__(self) -> None:
        positive = (
            "upload_interval_s",
            "upload_timeout_s",
            "upload_backoff_max_s",
            "upload_max_points",
            "ingest_max_body_bytes",
            "ingest_max_inflated_bytes",
            "ingest_max_points",
            "ingest_max_pending_points",
            "ingest_max_spooled_points",
            "ingest_retry_after_s",
            "ingest_unavailable_retry_after_s",
            "ingest_burst",
            "ingest_batch_memory_s",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError("must be > 0", section=SECTION, key=name)
        if self.ingest_rate_per_s < 0:
            raise ConfigError("must be >= 0 (0: no limit)", section=SECTION, key="ingest_rate_per_s")
        if self.upload_url is not None and not self.upload_url.startswith(("https://", "http://")):
            raise ConfigError(
                "must start with https:// (or http:// on a trusted link)", section=SECTION, key="upload_url"
            )

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
    ) -> FleetConfig:
        """The ``[fleet]`` table of ``path`` (no path: all defaults); the environment gives the
        upload URL and the credential file when set."""
        return cls.from_config_file(config.read(path), env)

    @classmethod
    def from_config_file(cls, cfile: config.ConfigFile, env: Mapping[str, str] | None = None) -> FleetConfig:
        env = os.environ if env is None else env
        values = config.settings(cls, cfile.section(SECTION), file=cfile.path, section=SECTION)
        if env.get(UPLOAD_URL_ENV):
            values["upload_url"] = env[UPLOAD_URL_ENV]
        if env.get(CREDENTIAL_FILE_ENV):
            values["credential_file"] = env[CREDENTIAL_FILE_ENV]
        return config.build(cls, {}, file=cfile.path, section=SECTION, **values)

    def credential(self, env: Mapping[str, str] | None = None) -> str:
        """The gateway credential's text: ``$HEMS_GATEWAY_CREDENTIAL``, else the credential file."""
        env = os.environ if env is None else env
        text = env.get(CREDENTIAL_ENV, "").strip()
        if text:
            return text
        if not self.credential_file:
            raise ConfigError(
                f"uploading needs a gateway credential: set {CREDENTIAL_ENV} or {CREDENTIAL_FILE_ENV} "
                "(or [fleet] credential_file); issue one with 'hems principals gateway issue'"
            )
        try:
            text = Path(self.credential_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"{self.credential_file}: {exc.strerror or exc}", section=SECTION, key="credential_file"
            ) from None
        if not text:
            raise ConfigError(f"{self.credential_file} is empty", section=SECTION, key="credential_file")
        return text
