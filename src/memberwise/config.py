"""Settings: one object, read from the environment (prefix ``MEMBERWISE_``) and passed down.

Every setting is listed with its meaning in ``.env.example``. Besides the environment, two files
in the home directory are read: the embedded secrets (see :meth:`Settings.pii_key_bytes`) and
the home's settings file (``HOME/settings.json``, see :meth:`Settings.remember`), which keeps
what the home was set up with -- its program -- so every later command and the server use it
without an exported variable. The environment wins over the home's file.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from memberwise.kit.secrets import write_secret_file


class Engine(StrEnum):
    """The warehouse engine batch work runs on."""

    duckdb = "duckdb"
    spark = "spark"


#: Settings a home keeps in its settings file (``memberwise init --program``, ``memberwise run``).
HOME_SETTINGS = ("program_file",)


class Settings(BaseSettings):
    """Everything memberwise can be told, with defaults that run embedded on one machine."""

    model_config = SettingsConfigDict(
        env_prefix="MEMBERWISE_", env_file=".env", extra="ignore", frozen=False
    )

    home: Path = Field(
        default=Path("memberwise-data"),
        description="Directory for embedded data: the SQLite store, the event lake, secrets.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the operational store; default SQLite file in home. "
        "PostgreSQL: postgresql+psycopg://user:pass@host/db",
    )
    lake_dir: Path | None = Field(
        default=None, description="Root of the event lake; default HOME/lake."
    )
    engine: Engine = Field(default=Engine.duckdb, description="Warehouse engine: duckdb or spark.")
    program_file: Path | None = Field(
        default=None,
        description="The membership program definition (YAML). Default: the program the home "
        "was set up with (HOME/settings.json, written by `memberwise init --program` and "
        "`memberwise run`), else the built-in empty program.",
    )
    pii_key: SecretStr | None = Field(
        default=None,
        description="Base64 of a 32-byte AES-GCM key for member PII. "
        "Default: HOME/secrets/pii.key, created by `memberwise init`.",
    )
    api_key_cache_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a verified API key is trusted before the store is asked again "
        "whether it still stands (one keyed read; argon2 runs only for a key not seen before). "
        "Revocation through the API takes effect at once in the serving process.",
    )
    display_timezone: str = Field(
        default="Asia/Shanghai", description="Time zone for member-facing day boundaries."
    )
    webhooks_sender: bool = Field(
        default=False,
        description="Deliver webhooks from inside the API process (`memberwise serve` turns it "
        "on unless --no-webhooks; else run `memberwise webhooks send` beside the API).",
    )
    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8000, description="Port the API listens on.")
    # -- scale-out: where the lake, builds and models live, and how Spark runs (issue 19)
    storage_uri: str | None = Field(
        default=None,
        description="Base URI of the lake (BASE/lake), the builds (BASE/warehouse/builds) and "
        "their scratch: file:///path, s3://bucket/prefix or hdfs://namenode/path. Default: the "
        "home directory (MEMBERWISE_LAKE_DIR still moves the lake alone).",
    )
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="JSON object of fsspec options for the storage URI's file system, e.g. "
        '{"endpoint_url": "http://minio:9000", "key": "...", "secret": "..."} for s3fs; '
        "AWS_* environment variables are honoured too.",
    )
    spark_master: str = Field(
        default="local[*]",
        description="Spark master URL for MEMBERWISE_ENGINE=spark: local[*], spark://host:7077, "
        "yarn, k8s://https://host:443.",
    )
    spark_conf: str = Field(
        default="",
        description="Extra Spark configuration, as key=value pairs separated by commas or a JSON "
        "object; each wins over memberwise's default for the same key, e.g. "
        "spark.sql.shuffle.partitions=400,spark.driver.memory=8g.",
    )
    # -- the window business times sent to the API must lie in (orders, refunds, payments...)
    business_time_earliest: datetime = Field(
        default=datetime(2000, 1, 1, tzinfo=UTC),
        description="Earliest accepted business time (e.g. the platform's launch); naive = UTC.",
    )
    business_time_max_future_seconds: float = Field(
        default=300,
        ge=0,
        le=86_400,
        description="How far ahead of the server's clock a business time may lie (clock skew).",
    )

    @model_validator(mode="after")
    def _absolute_home(self) -> Settings:
        self.home = self.home.expanduser().absolute()
        # What the home was set up with, unless the environment (or the caller) says otherwise.
        for name, value in self.home_settings().items():
            if name in HOME_SETTINGS and name not in self.model_fields_set and value:
                setattr(self, name, Path(value))
        return self

    @property
    def home_settings_file(self) -> Path:
        """``HOME/settings.json``: the settings the home was set up with (its program)."""
        return self.home / "settings.json"

    def home_settings(self) -> dict[str, str]:
        """The settings kept in the home (empty when none were, or the file is unreadable)."""
        try:
            data = json.loads(self.home_settings_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return (
            {k: str(v) for k, v in data.items() if isinstance(v, str)}
            if isinstance(data, dict)
            else {}
        )

    def remember(self, **values: Path | None) -> None:
        """Keep ``values`` (names of :data:`HOME_SETTINGS`) in the home's settings file, so later
        commands and the server opened on this home use them; None forgets one.

        Written atomically (temporary file, fsync, rename). Raises ValueError for another name.
        """
        unknown = set(values) - set(HOME_SETTINGS)
        if unknown:
            raise ValueError(f"not a setting kept in the home: {', '.join(sorted(unknown))}")
        kept: dict[str, str] = self.home_settings()
        for name, value in values.items():
            if value is None:
                kept.pop(name, None)
            else:
                kept[name] = str(Path(value).expanduser().absolute())
            setattr(self, name, None if value is None else Path(kept[name]))
        path = self.home_settings_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(kept, indent=2, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @property
    def db_url(self) -> str:
        """The operational store's URL, defaulting to a SQLite file in the home directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'memberwise.sqlite'}"

    @property
    def lake_root(self) -> Path:
        """Root directory of the event lake."""
        return (self.lake_dir or self.home / "lake").expanduser().absolute()

    @property
    def storage_root(self) -> str:
        """The storage base URI (``file://`` of the home by default), without a trailing
        slash."""
        if self.storage_uri:
            return self.storage_uri.rstrip("/")
        return self.home.as_uri()

    def spark_options(self) -> dict[str, str]:
        """``spark_conf`` as a dict. Raises ValueError for a pair without ``=`` or bad JSON."""
        text = self.spark_conf.strip()
        if not text:
            return {}
        if text.startswith("{"):
            parsed = json.loads(text)
            if not isinstance(parsed, dict):
                raise ValueError("MEMBERWISE_SPARK_CONF: a JSON object is expected")
            return {str(k): str(v) for k, v in parsed.items()}
        pairs: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"MEMBERWISE_SPARK_CONF: {item!r} is not key=value")
            pairs[key.strip()] = value.strip()
        return pairs

    def backend_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`memberwise.kit.warehouse.open_backend` from these
        settings (the Spark master and configuration, the scratch folder, the storage)."""
        return {
            "temp_dir": self.home / "warehouse" / "tmp",
            "spark_master": self.spark_master,
            "spark_conf": self.spark_options(),
            "storage_options": dict(self.storage_options),
        }

    @property
    def pii_key_file(self) -> Path:
        return self.home / "secrets" / "pii.key"

    @cached_property
    def pii_key_bytes(self) -> bytes:
        """The 32-byte PII key from the environment or the home's secrets file.

        Raises RuntimeError when neither exists, so PII is never written under no key.
        """
        if self.pii_key is not None:
            raw = self.pii_key.get_secret_value()
        elif self.pii_key_file.exists():
            raw = self.pii_key_file.read_text().strip()
        else:
            raise RuntimeError(
                "no PII key: set MEMBERWISE_PII_KEY or run `memberwise init` to create "
                f"{self.pii_key_file}"
            )
        key = base64.b64decode(raw)
        if len(key) != 32:
            raise RuntimeError("the PII key must be 32 bytes, base64-encoded")
        return key

    def ensure_pii_key(self) -> bool:
        """Create the home's PII key file if no key is configured; True when one was created."""
        if self.pii_key is not None or self.pii_key_file.exists():
            return False
        write_secret_file(
            self.pii_key_file, base64.b64encode(secrets.token_bytes(32)).decode() + "\n"
        )
        return True


def get_settings() -> Settings:
    """Settings from the current environment (a new object each call, so tests can vary env)."""
    return Settings()
