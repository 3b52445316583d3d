"""``[plugins.channels.webhook]``: where the webhook channel posts session messages, the
secret that signs them and checks inbound ones, the timestamp window and the timeout.
Each problem names its key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from host.api import GatewayError, Secret, SecretError, Settings

PREFIX = "plugins.channels"


class WebhookSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    secret: Any = None
    tolerance_seconds: float = Field(300.0, ge=1, le=86400)
    timeout_seconds: float = Field(10.0, ge=0.1, le=120)


class ChannelsSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhook: WebhookSection = Field(default_factory=WebhookSection)


@dataclass(frozen=True)
class WebhookConfig:
    url: str | None
    secret: str | None
    tolerance_seconds: float
    timeout_seconds: float


def parse(settings: Settings) -> tuple[WebhookConfig, list[str]]:
    found: list[str] = []
    try:
        section = ChannelsSection.model_validate(settings.plugin_section("channels"))
    except ValidationError as exc:
        found = [
            f"{PREFIX}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        ]
        section = ChannelsSection()
    hook = section.webhook
    if hook.url is not None and urlsplit(hook.url).scheme not in ("http", "https"):
        found.append(f"{PREFIX}.webhook.url: must be an http or https URL")
    secret: str | None = None
    if hook.secret is not None:
        try:
            secret = Secret.resolve(hook.secret, settings.config_dir).get() or None
        except (SecretError, TypeError, ValueError) as exc:
            found.append(f"{PREFIX}.webhook.secret: {exc}")
    return WebhookConfig(hook.url, secret, hook.tolerance_seconds, hook.timeout_seconds), found


def problems(settings: Settings) -> list[str]:
    return parse(settings)[1]


def webhook_config(settings: Settings) -> WebhookConfig:
    config, found = parse(settings)
    if found:
        raise GatewayError(400, "config_invalid", "; ".join(found))
    return config
