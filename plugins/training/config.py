"""``[plugins.training]`` and the runtime collection settings.

The file gives the defaults of the collection settings (``collect``, which the API calls
``enabled``, as ``enabled`` in the section switches the plugin itself; ``sample_rate``,
``sources``, ``redact_safety``, ``redact_keys``, ``export_batch_size``) and the settings
only the file may set (``export_dir``, ``queue_max``). ``PATCH /gateway/training/config``
stores changes of the collection settings in the database, so every replica uses them;
what is stored wins over the file. Every problem names its key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from host.api import GatewayError, Settings, validation_message

SECTION = "training"
PREFIX = f"plugins.{SECTION}."
Source = Literal["runs", "responses", "chat"]
SOURCES: tuple[Source, ...] = ("runs", "responses", "chat")
DEFAULT_REDACT_KEYS = ["api_key", "authorization", "password", "secret", "token"]


class Collection(BaseModel):
    """What is collected and how; the body of the config PATCH sets any of these."""

    # Strict: "yes" is not a boolean and "0.5" not a rate.
    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool = Field(False, description="record rollouts at all (off until turned on)")
    sample_rate: float = Field(
        1.0, ge=0.0, le=1.0, description="share of runs and conversations recorded (0 to 1)"
    )
    sources: list[Source] = Field(
        default_factory=lambda: list(SOURCES),
        description="runs (finished pipeline runs), responses (Responses API conversations), "
        "chat (chat completions with metadata.session_id)",
    )
    redact_safety: bool = Field(
        True,
        description="pass every text through the registered safety scanners (stage training) "
        "and keep the redacted text",
    )
    redact_keys: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REDACT_KEYS),
        max_length=100,
        description="JSON keys whose values are replaced by [REDACTED] anywhere in a "
        "trajectory (case-insensitive)",
    )
    export_batch_size: int = Field(
        500, ge=1, le=10000, description="rollouts per batch handed to trainer plugins"
    )

    @field_validator("redact_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if not 1 <= len(key) <= 100:
                raise ValueError("each key is 1 to 100 characters")
        return sorted({k.lower() for k in keys})

    @field_validator("sources")
    @classmethod
    def _sources(cls, sources: list[Source]) -> list[Source]:
        return sorted(set(sources))


class FileConfig(Collection):
    """The whole ``[plugins.training]`` section (lax: environment overrides are strings)."""

    model_config = ConfigDict(extra="forbid", strict=False)

    export_dir: str | None = Field(
        None, description="where exports are written (default <state_dir>/training/exports)"
    )
    queue_max: int = Field(
        10000,
        ge=1,
        le=1_000_000,
        description="finished runs and conversations waiting to be recorded, per process; "
        "beyond it they are dropped (counted in the status)",
    )

    max_age_days: float = Field(
        0,
        ge=0,
        le=36500,
        description="rollouts not updated for this long are removed by the retention task "
        "(gateway_prune); 0 keeps them",
    )

    catch_up_hours: float = Field(
        24,
        ge=0,
        le=8760,
        description="at start-up and after the queue overflowed, record the runs finished "
        "this far back that have no rollout; 0 turns it off",
    )

    def collection(self) -> Collection:
        return Collection.model_validate(self.model_dump(include=set(Collection.model_fields)))


def parse(settings: Settings) -> tuple[FileConfig, list[str]]:
    # ``enabled`` in the section switches the plugin itself: the file says ``collect``
    # for what the API calls ``enabled``.
    section = dict(settings.plugin_section(SECTION))
    if "collect" in section:
        section["enabled"] = section.pop("collect")
    try:
        return FileConfig.model_validate(section), []
    except ValidationError as exc:
        found = []
        for error in exc.errors():
            loc = ".".join(str(p) for p in error.get("loc", ()))
            loc = "collect" if loc == "enabled" else loc
            found.append(f"{PREFIX}{loc}: {error.get('msg', 'invalid value')}")
        return FileConfig(), found


def problems(settings: Settings) -> list[str]:
    return parse(settings)[1]


def configured(settings: Settings) -> FileConfig:
    config, found = parse(settings)
    if found:
        raise GatewayError(400, "config_invalid", "; ".join(found))
    return config


def export_dir(settings: Settings, config: FileConfig) -> Path:
    if config.export_dir is None:
        return settings.state_dir / "training" / "exports"
    path = Path(config.export_dir)
    if not path.is_absolute() and settings.config_dir is not None:
        path = settings.config_dir / path
    return path


def merged(base: Collection, stored: dict[str, Any] | None) -> Collection:
    """The file's values with the stored changes on top (a stored value the current
    version no longer accepts is left out rather than failing every request)."""
    values = base.model_dump()
    for key, value in (stored or {}).items():
        if key not in Collection.model_fields:
            continue
        try:
            Collection.model_validate({**values, key: value})
        except ValidationError:
            continue
        values[key] = value
    return Collection.model_validate(values)


def patch_of(data: Any) -> dict[str, Any]:
    """The changes a PATCH body asks for, validated; 400 naming the field."""
    if not isinstance(data, dict) or not data:
        raise GatewayError(
            400,
            "invalid_request_body",
            "send a JSON object with at least one of: " + ", ".join(Collection.model_fields),
        )
    try:
        checked = Collection.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(exc)
        raise GatewayError(400, "invalid_request_body", message, details={"param": param}) from None
    return {key: getattr(checked, key) for key in data}
