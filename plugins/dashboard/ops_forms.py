"""The ops sections' forms that work without a script: each POST needs the session and
its CSRF token (403, nothing changed), then acts as the signed-in principal through the
plugin's typed service (or ``host.api`` for the configuration), so the gates and
refusals of the API it stands for apply. Done: post/redirect/get, the section showing
what happened once. Refused: the refusal page with the API's status, nothing changed."""

from __future__ import annotations

import json
from typing import Any

from quart import current_app

from host.api import GatewayError, context, patch_config, public, raw_body
from plugins.channels.contract import ChannelsAPI
from plugins.dashboard.ops_loaders import need
from plugins.dashboard.ops_panels import SECTIONS, section_page
from plugins.dashboard.pages import bp, current_session, flashed, html, page, require_form
from plugins.dashboard.websession import WebSession
from plugins.deploy.contract import AgentState
from plugins.jobs.contract import JobsAPI
from plugins.safety.contract import SafetyAPI
from plugins.training.contract import TrainingAPI

GATE_CONFIG_WRITE = "allow_config_write"  # PATCH /gateway/config's gate (control plugin)


async def _refused(session: WebSession, slug: str, exc: GatewayError) -> Any:
    if exc.code == "feature_disabled":
        section = SECTIONS[slug]
        return await page(
            "disabled.html",
            session,
            code=503,
            section=slug,
            title=section.title,
            plugin=", ".join(section.plugins),
        )
    return await page(
        "form_result.html", session, code=exc.status, section=slug, error=exc, back=f"/ops/{slug}"
    )


def _text(form: Any, name: str, required: bool = True) -> str | None:
    value = (form.get(name) or "").strip()
    if required and not value:
        raise GatewayError(400, "invalid_request_body", f"{name}: required", param=name)
    return value or None


def _json_object(form: Any, name: str) -> dict[str, Any]:
    raw = _text(form, name) or ""
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise GatewayError(400, "invalid_json", f"{name}: not JSON ({exc})", param=name) from None
    if not isinstance(value, dict):
        raise GatewayError(400, "invalid_json", f"{name}: must be a JSON object", param=name)
    return value


@bp.post("/ops/tools-jobs/cancel")
@public
@raw_body
@html()
async def ops_cancel_job() -> Any:
    """Cancel a job (form: ``job_id``, ``reason``), as ``POST /gateway/jobs/{id}/cancel``:
    ``allow_jobs_cancel``, another's job 404 or 403 without ``allow_jobs_act_all``."""
    session, form = await require_form(await current_session())
    try:
        job_id = _text(form, "job_id") or ""
        job = await need(JobsAPI, "jobs").cancel(
            session.principal, job_id, _text(form, "reason", False)
        )
    except GatewayError as exc:
        return await _refused(session, "tools-jobs", exc)
    return flashed("/ops/tools-jobs", f"Job {job.id} is {job.status}.")


@bp.post("/ops/channels/lifecycle")
@public
@raw_body
@html()
async def ops_channel_action() -> Any:
    """A channel lifecycle action (form: ``channel``, ``action``), as ``POST
    /gateway/channels/{channel}/lifecycle``: ``allow_channels_control``."""
    session, form = await require_form(await current_session())
    try:
        channel = _text(form, "channel") or ""
        action = _text(form, "action") or ""
        out = await need(ChannelsAPI, "channels").act(session.principal, channel, action)
    except GatewayError as exc:
        return await _refused(session, "channels", exc)
    state = "running" if out.state.running else "stopped"
    login = "logged in" if out.state.logged_in else "logged out"
    return flashed(
        "/ops/channels",
        f"Channel {out.channel}: {out.action} done ({state}, {login}); "
        f"result {json.dumps(out.result, sort_keys=True)[:300]}",
    )


@bp.post("/ops/config")
@public
@raw_body
@html()
async def ops_config_patch() -> Any:
    """Change the runtime overrides (form: ``patch``, a JSON merge patch), as ``PATCH
    /gateway/config``: ``allow_config_write``, and ``"*"`` for keys outside ``events``."""
    session, form = await require_form(await current_session())
    ctx = context()
    try:
        ctx.auth.require_gate(session.principal, GATE_CONFIG_WRITE, "changing the configuration")
        patch = _json_object(form, "patch")
        patch.pop("policy_gate", None)
        if not patch:
            raise GatewayError(400, "empty_patch", "the patch changes nothing")
        report = await patch_config(current_app, patch, session.principal)
    except GatewayError as exc:
        return await _refused(session, "config", exc)
    keys = report["applied_live"] + report["restart_required"]
    # What the API publishes: the audit plugin records it.
    await ctx.hub.publish("gateway", "config.patched", {"by": session.principal.name, "keys": keys})
    live = ", ".join(report["applied_live"]) or "none"
    later = ", ".join(report["restart_required"]) or "none"
    return flashed("/ops/config", f"Configuration changed. Live: {live}. After a restart: {later}.")


@bp.post("/ops/safety/policy")
@public
@raw_body
@html()
async def ops_safety_policy() -> Any:
    """Replace the safety policy (form: ``policy``, JSON), as ``PUT
    /gateway/safety/policy``: ``allow_safety_write``, 409 ``safety_floor``."""
    session, form = await require_form(await current_session())
    try:
        policy = _json_object(form, "policy")
        policy.pop("policy_gate", None)
        done = await need(SafetyAPI, "safety").replace_policy(session.principal, policy)
    except GatewayError as exc:
        return await _refused(session, "safety", exc)
    return flashed("/ops/safety", f"Safety policy version {done.version} is in force.")


@bp.post("/ops/safety/test")
@public
@raw_body
@html()
async def ops_safety_test() -> Any:
    """Scan a text (form: ``text``, ``stage``), as ``POST /gateway/safety/test``
    (``allow_safety_read``); the page shows the verdict (nothing is stored)."""
    session, form = await require_form(await current_session())
    try:
        text = form.get("text") or ""
        stage = _text(form, "stage") or ""
        verdict = await need(SafetyAPI, "safety").scan(session.principal, text, stage)
    except GatewayError as exc:
        return await _refused(session, "safety", exc)
    shown = verdict.model_dump(mode="json", exclude={"matches"})
    return await section_page(
        "safety",
        result={"form": "/ops/safety/test", "data": shown},
        form_values={"text": text, "stage": stage},
    )


@bp.post("/ops/deploy")
@public
@raw_body
@html()
async def ops_deploy_agent() -> Any:
    """Deploy or roll back an agent (form: ``body``, the JSON of ``POST
    /gateway/deploy``) through the deploy plugin's ``AgentState`` service:
    ``allow_deploy`` (403), 400 naming the field, 404, 409, 422 as the route."""
    session, form = await require_form(await current_session())
    try:
        body = _json_object(form, "body")
        record = await need(AgentState, "deploy").deploy(session.principal, body)
    except GatewayError as exc:
        return await _refused(session, "deploy", exc)
    return flashed(
        "/ops/deploy",
        f"Agent {record.agent_id} is {record.state} at version {record.live_version}.",
    )


@bp.post("/ops/agents/stop")
@public
@raw_body
@html()
async def ops_stop_agent() -> Any:
    """Stop an agent (form: ``agent_id``, ``reason``; ``back``: the page to return to)
    as ``POST /gateway/agents/{agent_id}/stop``: ``allow_deploy`` (403), 404
    ``agent_not_found``; its running work is cancelled."""
    session, form = await require_form(await current_session())
    back = "/ops/agents" if form.get("back") != "/ops/deploy" else "/ops/deploy"
    try:
        agent_id = _text(form, "agent_id") or ""
        record = await need(AgentState, "deploy").stop(
            session.principal, agent_id, _text(form, "reason", False)
        )
    except GatewayError as exc:
        return await _refused(session, back.removeprefix("/ops/"), exc)
    return flashed(back, f"Agent {record.agent_id} is {record.state}.")


@bp.post("/ops/training/feedback")
@public
@raw_body
@html()
async def ops_training_feedback() -> Any:
    """Rate a rollout (form: ``rollout_id``, ``body``: ``{reward, label, comment}``) as
    ``POST /gateway/training/rollouts/{id}/feedback``: ``allow_training_feedback`` (403),
    another's rollout 404 or 403 without ``allow_training_act_all``."""
    session, form = await require_form(await current_session())
    try:
        rollout_id = _text(form, "rollout_id") or ""
        body = _json_object(form, "body")
        body.pop("policy_gate", None)
        done = await need(TrainingAPI, "training").feedback(session.principal, rollout_id, body)
    except GatewayError as exc:
        return await _refused(session, "training", exc)
    return flashed("/ops/training", f"Feedback stored on rollout {done.id}.")


@bp.post("/ops/training/config")
@public
@raw_body
@html()
async def ops_training_config() -> Any:
    """Change what is collected (form: ``patch``, JSON) as ``PATCH
    /gateway/training/config``: ``allow_training_config`` (403), 400 naming the field."""
    session, form = await require_form(await current_session())
    try:
        changes = _json_object(form, "patch")
        changes.pop("policy_gate", None)
        done = await need(TrainingAPI, "training").change_config(session.principal, changes)
    except GatewayError as exc:
        return await _refused(session, "training", exc)
    changed = ", ".join(done.changed) or "nothing"
    return flashed("/ops/training", f"Training settings changed: {changed}.")
