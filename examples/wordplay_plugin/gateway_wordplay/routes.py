"""``POST /wordplay/reverse-count``: turn a text around with a model and count its words
with a pipeline run, through the two plugins' services.

The caller needs the pipelines plugin's run gate (``allow_pipeline_run``): the run is
started as the caller, like any other run, and shows in ``GET /runs``. Without either
plugin the route answers 503 ``service_unavailable`` naming it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import validate_request, validate_response

from gateway_wordplay.steps import COUNT_WORDS
from host.api import GatewayError, context, current_principal, service
from plugins.openai_compat.contract import ModelCatalog, ProviderError
from plugins.pipelines.contract import PipelinesAPI

bp = Blueprint("wordplay", __name__, url_prefix="/wordplay")


class ReverseCountRequest(BaseModel):
    text: str = Field(..., min_length=1, max_length=10_000)


class ReverseCountResponse(BaseModel):
    reversed: str
    words: int
    run_id: str


def model_name() -> str:
    """``[plugins.wordplay] model``: the gateway model that turns the text around."""
    return str(context().settings.plugin_section("wordplay").get("model", "backwards"))


@bp.post("/reverse-count")
@validate_request(ReverseCountRequest)
@validate_response(ReverseCountResponse)
async def reverse_count(data: ReverseCountRequest) -> ReverseCountResponse:
    """The text with its words reversed by a model, and their count by a pipeline run."""
    models = service(ModelCatalog)
    pipelines = service(PipelinesAPI)
    try:
        answer = await models.chat(
            model_name(), {"messages": [{"role": "user", "content": data.text}]}
        )
    except ProviderError as exc:
        raise GatewayError(exc.status, exc.code, exc.message) from exc
    run_id = await pipelines.start_run(
        COUNT_WORDS.id,
        {"text": data.text},
        principal=current_principal(),
        trigger={"type": "wordplay"},
    )
    state = await pipelines.wait(run_id)
    if state.status != "completed" or not isinstance(state.output, dict):
        raise GatewayError(502, "count_failed", f"run {run_id} ended {state.status}")
    return ReverseCountResponse(
        reversed=answer["choices"][0]["message"]["content"],
        words=int(state.output["words"]),
        run_id=run_id,
    )
