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
    be taken back, so it raises ``pipeline_output_diverged``. So does a newer attempt
    that completes having said less than what was sent (its ``step.completed`` event
    comes while its text is still held back, or the run ends so)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.steps: dict[str, _StepText] = {}

    def feed(self, event: Event) -> str:
        """The text to send for ``event`` ("" for nothing)."""
        if event.type in ("step.completed", "step.failed", "step.skipped"):
            self._ended(str(event.data.get("step") or ""), event.type == "step.completed")
            return ""
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
        raise self._diverged(path, attempt, "streams text that differs from what was already sent")

    def finish(self) -> None:
        """At the end of a completed run: a step whose newer attempt is still held back
        said less than what was sent. A safeguard: the engine publishes a step's
        ``step.completed`` before any later step starts, so ``feed`` raises first. Another
        step's delta is not taken as the end, as ``parallel`` branches interleave theirs."""
        for path in self.steps:
            self._ended(path, completed=True)

    def _ended(self, path: str, completed: bool) -> None:
        """The step at ``path`` ended. Completed while its newer attempt's text is held
        back, that attempt's final text is a strict prefix of what was sent: the client
        got more than the step's output. A step that failed or was skipped has no output
        to match, so what is held back is dropped."""
        step = self.steps.get(path)
        if step is None or not step.redo:
            return
        if not completed:
            step.redo = ""
            return
        raise self._diverged(
            path, step.attempt, "completed with less text than what was already sent"
        )

    def _diverged(self, path: str, attempt: int, what: str) -> ProviderError:
        return ProviderError(
            502,
            "pipeline_output_diverged",
            f"step {path!r} of pipeline run {self.run_id} was retried and its new attempt "
            f"({attempt}) {what}; the stream stops here, the run goes on in the pipelines "
            f"plugin (GET /runs/{self.run_id} shows it and its output)",
        )
