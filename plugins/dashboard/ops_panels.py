"""The ops sections that stand for other plugins' HTTP APIs: tools and jobs, channels,
config, safety, deploy, agents. Each page is a set of panels. A panel with ``load`` is
read on the server through the plugin's typed service and a form with ``action`` posts
to the server (``ops_forms.py``: session, CSRF and the API's gates; no script needed).
Every section's panels are read on the server now; a panel with ``get`` (read from the
plugin's API by the page's script) and a form without ``action`` (the script calls the
API with the cookie and the CSRF header, so its own gates and ownership apply) remain
possible for a section that needs no server side. A section whose plugin is off says it is
disabled."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quart import current_app

from host.api import public
from plugins.dashboard.ops_loaders import load_panels
from plugins.dashboard.overview import plugin_names
from plugins.dashboard.pages import bp, current_session, html, page, to_login


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    kind: str = "text"  # text, textarea, select, json
    options: tuple[str, ...] = ()
    required: bool = False
    prefill: str | None = None  # the key of the section's loaded values to fill it with


@dataclass(frozen=True)
class Form:
    title: str
    method: str
    path: str  # {field} parts are filled from the form
    fields: tuple[Field, ...] = ()
    body: tuple[str, ...] = ()  # the fields sent in the JSON body ("*": a JSON field's value)
    action: str | None = None  # a server-side form: this page's POST route


@dataclass(frozen=True)
class Panel:
    title: str
    get: str | None = None
    forms: tuple[Form, ...] = ()
    note: str = ""
    load: str | None = None  # read on the server: a loader of ops_forms.LOADERS


@dataclass(frozen=True)
class Section:
    slug: str
    title: str
    plugins: tuple[str, ...]
    panels: tuple[Panel, ...] = field(default_factory=tuple)


SECTIONS: dict[str, Section] = {
    s.slug: s
    for s in (
        Section(
            "tools-jobs",
            "Tools and jobs",
            ("tools", "jobs"),
            (
                Panel("Tools", load="tools"),
                Panel("Tool usage", load="tool_stats"),
                Panel(
                    "Jobs",
                    load="jobs",
                    forms=(
                        Form(
                            "Cancel a job",
                            "POST",
                            "/gateway/jobs/{job_id}/cancel",
                            (Field("job_id", "Job id", required=True), Field("reason", "Reason")),
                            ("reason",),
                            action="/ops/tools-jobs/cancel",
                        ),
                    ),
                ),
            ),
        ),
        Section(
            "channels",
            "Channels",
            ("channels",),
            (
                Panel(
                    "Lifecycle",
                    load="channels",
                    forms=(
                        Form(
                            "Act on a channel",
                            "POST",
                            "/gateway/channels/{channel}/lifecycle",
                            (
                                Field("channel", "Channel", required=True),
                                Field(
                                    "action",
                                    "Action",
                                    "select",
                                    ("status", "probe", "login", "logout", "start", "stop"),
                                ),
                            ),
                            ("action",),
                            action="/ops/channels/lifecycle",
                        ),
                    ),
                ),
            ),
        ),
        Section(
            "config",
            "Configuration",
            ("control",),
            (
                Panel(
                    "Running configuration (secrets masked)",
                    load="config",
                    forms=(
                        Form(
                            "Change it (a JSON merge patch, validated and written to the "
                            "overrides file)",
                            "PATCH",
                            "/gateway/config",
                            (Field("patch", "Patch", "json", required=True),),
                            ("*",),
                            action="/ops/config",
                        ),
                    ),
                ),
            ),
        ),
        Section(
            "safety",
            "Safety",
            ("safety",),
            (
                Panel(
                    "Policy",
                    load="safety_policy",
                    forms=(
                        Form(
                            "Replace the policy (above the floor set in gateway.toml)",
                            "PUT",
                            "/gateway/safety/policy",
                            (Field("policy", "Policy", "json", required=True, prefill="policy"),),
                            ("*",),
                            action="/ops/safety/policy",
                        ),
                    ),
                ),
                Panel("Rules", load="safety_rules"),
                Panel(
                    "Test a text",
                    forms=(
                        Form(
                            "Scan",
                            "POST",
                            "/gateway/safety/test",
                            (
                                Field("text", "Text", "textarea", required=True),
                                Field(
                                    "stage",
                                    "Stage",
                                    "select",
                                    (
                                        "inbound",
                                        "model_output",
                                        "tool_output",
                                        "session_append",
                                        "followup",
                                    ),
                                ),
                            ),
                            ("text", "stage"),
                            action="/ops/safety/test",
                        ),
                    ),
                ),
            ),
        ),
        Section(
            "deploy",
            "Deploy",
            ("deploy",),
            (
                Panel(
                    "Deployments",
                    load="deployments",
                    forms=(
                        Form(
                            "Deploy an agent",
                            "POST",
                            "/gateway/deploy",
                            (
                                Field(
                                    "body",
                                    "Body: {agent_id, kind, version, spec} or "
                                    "{agent_id, rollback_to}",
                                    "json",
                                    required=True,
                                ),
                            ),
                            ("*",),
                            action="/ops/deploy",
                        ),
                        Form(
                            "Stop an agent",
                            "POST",
                            "/gateway/agents/{agent_id}/stop",
                            (
                                Field("agent_id", "Agent id", required=True),
                                Field("reason", "Reason"),
                            ),
                            action="/ops/agents/stop",
                        ),
                    ),
                ),
            ),
        ),
        Section(
            "training",
            "Training",
            ("training",),
            (
                Panel("Status", load="training_status"),
                Panel(
                    "Rollouts",
                    load="training_rollouts",
                    forms=(
                        Form(
                            "Feedback on a rollout",
                            "POST",
                            "/gateway/training/rollouts/{rollout_id}/feedback",
                            (
                                Field("rollout_id", "Rollout id", required=True),
                                Field(
                                    "body", "Body: {reward, label, comment}", "json", required=True
                                ),
                            ),
                            ("*",),
                            action="/ops/training/feedback",
                        ),
                    ),
                ),
                Panel(
                    "Collection settings",
                    forms=(
                        Form(
                            "Change them",
                            "PATCH",
                            "/gateway/training/config",
                            (
                                Field(
                                    "patch",
                                    "Patch: {enabled, sample_rate, sources}",
                                    "json",
                                    required=True,
                                ),
                            ),
                            ("*",),
                            action="/ops/training/config",
                        ),
                    ),
                ),
            ),
        ),
        Section(
            "agents",
            "Agents",
            ("agents",),
            (
                Panel("Agent sessions", load="agent_sessions"),
                Panel(
                    "Stop an agent",
                    forms=(
                        Form(
                            "Stop",
                            "POST",
                            "/gateway/agents/{agent_id}/stop",
                            (
                                Field("agent_id", "Agent id", required=True),
                                Field("reason", "Reason"),
                            ),
                            action="/ops/agents/stop",
                        ),
                    ),
                    note="Stopping needs the deploy plugin and allow_deploy.",
                ),
            ),
        ),
    )
}


async def section_page(slug: str, status: int = 200, **values: Any) -> Any:
    session = await current_session()
    if session is None:
        return to_login()
    section = SECTIONS[slug]
    loaded = set(plugin_names(current_app))
    missing = [p for p in section.plugins if p not in loaded]
    if missing:
        return await page(
            "disabled.html",
            session,
            code=503,
            section=slug,
            title=section.title,
            plugin=", ".join(missing),
        )
    loaded_values = await load_panels(session, [p.load for p in section.panels if p.load])
    needs_script = any(p.get or any(f.action is None for f in p.forms) for p in section.panels)
    return await page(
        "panels.html",
        session,
        code=status,
        section=slug,
        spec=section,
        loaded=loaded_values,
        needs_script=needs_script,
        **values,
    )


@bp.get("/ops/tools-jobs")
@public
@html()
async def ops_tools_jobs() -> Any:
    """Tools (inventory and usage) and jobs with a cancel form (the tools and jobs APIs)."""
    return await section_page("tools-jobs")


@bp.get("/ops/channels")
@public
@html()
async def ops_channels() -> Any:
    """Channel lifecycle actions (``POST /gateway/channels/{channel}/lifecycle``)."""
    return await section_page("channels")


@bp.get("/ops/config")
@public
@html()
async def ops_config() -> Any:
    """The running configuration and a form for a runtime override (``/gateway/config``)."""
    return await section_page("config")


@bp.get("/ops/safety")
@public
@html()
async def ops_safety() -> Any:
    """The safety policy and rules, and a test box (``/gateway/safety/*``)."""
    return await section_page("safety")


@bp.get("/ops/deploy")
@public
@html()
async def ops_deploy() -> Any:
    """Deploy and stop agents (``POST /gateway/deploy``, ``/gateway/agents/{id}/stop``)."""
    return await section_page("deploy")


@bp.get("/ops/training")
@public
@html()
async def ops_training() -> Any:
    """Training status and rollouts with feedback and collection-settings forms
    (``/gateway/training/*``)."""
    return await section_page("training")


@bp.get("/ops/agents")
@public
@html()
async def ops_agents() -> Any:
    """Agent sessions (``/sessions``) and a stop form."""
    return await section_page("agents")


@bp.get("/ops/agents/<agent_id>")
@public
@html()
async def ops_agent(agent_id: str) -> Any:
    """One agent: its sessions and a stop form filled in."""
    return await section_page("agents", agent_id=agent_id)
