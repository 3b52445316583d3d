"""What a pipeline run's events add to the answer of a pipeline model: the token usage
(the sum of its ``step.usage`` events) and the streamed text (its ``step.delta`` events,
each attempt of a retried step sent once)."""

from __future__ import annotations

from dataclasses import dataclass

from host.api import Event
from plugins.openai_compat.providers.base import ProviderError

USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


class RunUsage:
    """The sum of a run's ``step.usage`` events; ``usage`` is None while there was none
    (usage unknown, not zero)."""

    def __init__(self) -> None:
        self.usage: dict[str, int] | None = None

    def feed(self, event: Event) -> None:
        if event.type != "step.usage":
            return
        total = self.usage or dict.fromkeys(USAGE_KEYS, 0)
        for key in USAGE_KEYS:
            value = event.data.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                total[key] += value
        self.usage = total


@dataclass
class _StepText:
    attempt: int
    sent: str = ""  # what the client got from this step
    redo: str = ""  # a newer attempt's text, while it only repeats ``sent``


class StreamedText:
    """Turns ``step.delta`` events into the text to send. A retried step streams again
    from the start: a newer attempt's text is held back while it repeats what was sent,
    and only what goes beyond is sent; a newer attempt that says something else cannot
    be taken back, so it raises ``pipeline_output_diverged``."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.steps: dict[str, _StepText] = {}

    def feed(self, event: Event) -> str:
        """The text to send for ``event`` ("" for nothing)."""
        text = event.data.get("text") if event.type == "step.delta" else None
        if not isinstance(text, str) or not text:
            return ""
        path = str(event.data.get("step") or "")
        attempt = event.data.get("attempt")
        attempt = attempt if isinstance(attempt, int) else 0
        step = self.steps.setdefault(path, _StepText(attempt))
        if attempt < step.attempt:
            return ""  # an older attempt's late delta: superseded
        if attempt == step.attempt and not step.redo:
            step.sent += text
            return text
        if attempt > step.attempt:
            step.attempt, step.redo = attempt, ""
        step.redo += text
        if step.sent.startswith(step.redo):
            if len(step.redo) == len(step.sent):
                step.redo = ""  # caught up: this attempt streams on as its own
            return ""
        if step.redo.startswith(step.sent):
            new = step.redo[len(step.sent) :]
            step.sent, step.redo = step.redo, ""
            return new
        raise ProviderError(
            502,
            "pipeline_output_diverged",
            f"step {path!r} of pipeline run {self.run_id} was retried and its new attempt "
            f"({attempt}) streams text that differs from what was already sent; the stream "
            f"stops here, the run goes on in the pipelines plugin (GET /runs/{self.run_id} "
            "shows it and its output)",
        )
