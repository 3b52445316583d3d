"""The channels plugin: ``POST /gateway/channels/{channel}/lifecycle`` drives channels
registered through ``gateway_register_channels`` (404 unknown, 409 unsupported, state
stored and audited), the ``webhook`` channel posts signed messages to a real loopback
server and accepts signed inbound ones (HMAC, timestamp window, replay protection)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from host.api import GatewayError, context, service
from plugins.channels.contract import ChannelsAPI, ChannelState
from tests.conftest import ADMIN, READER, assert_error, db_rows, running_app
from tests.plugins_for_tests.kit import Plugin

pytestmark = pytest.mark.usefixtures("store_url")
SECRET = "channel-secret-0123"
INBOUND = "/gateway/channels/webhook/inbound"


def lifecycle(channel: str) -> str:
    return f"/gateway/channels/{channel}/lifecycle"


def sign(
    body: bytes, delivery: str, timestamp: int | None = None, secret: str = SECRET
) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"{stamp}.{delivery}.".encode() + body, hashlib.sha256)
    return {
        "X-Gateway-Signature": f"sha256={digest.hexdigest()}",
        "X-Gateway-Timestamp": stamp,
        "X-Gateway-Delivery": delivery,
        "Content-Type": "application/json",
    }


class Receiver:
    """A loopback HTTP server that keeps what was posted to it."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append(({k: v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def verified(self) -> list[dict[str, Any]]:
        """The bodies of the posts whose signature checks out with the secret."""
        found = []
        for headers, body in self.posts:
            expected = sign(
                body, headers["X-Gateway-Delivery"], int(headers["X-Gateway-Timestamp"])
            )
            if hmac.compare_digest(headers["X-Gateway-Signature"], expected["X-Gateway-Signature"]):
                found.append(json.loads(body))
        return found


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    thread = threading.Thread(target=found.server.serve_forever, daemon=True)
    thread.start()
    yield found
    found.server.shutdown()
    found.server.server_close()


@pytest.fixture
def settings(make_settings: Any, receiver: Receiver) -> Any:
    return make_settings(plugins={"channels": {"webhook": {"url": receiver.url, "secret": SECRET}}})


async def act(client: Any, channel: str, action: str, headers: dict[str, str] = ADMIN) -> Any:
    return await client.post(lifecycle(channel), json={"action": action}, headers=headers)


async def test_webchat_lifecycle_is_stored_audited_and_survives_a_restart(settings, store_url):
    async with running_app(settings) as (app, client):
        status = await act(client, "webchat", "status")
        assert status.status_code == 200
        body = await status.get_json()
        assert (body["changed"], body["state"]["running"]) == (False, True)
        stopped = await (await act(client, "webchat", "stop")).get_json()
        assert stopped["changed"] is True and stopped["state"]["running"] is False
        assert stopped["state"]["updated_by"] == "admin"
        assert await db_rows(store_url, "SELECT channel, running FROM channels_state") == [
            ("webchat", False)
        ]
        events = await context(app).store.events_after("channels")
        assert [e.type for e in events] == ["channel.stop"]
        assert events[0].data["audit"] == {
            "action": "channel.stop",
            "target": "webchat",
            "outcome": "succeeded",
            "reason_code": None,
        }
        with pytest.raises(GatewayError) as refused:
            await service(ChannelsAPI, app=app).send("webchat", "s-1", {"text": "hi"})
        assert refused.value.code == "channel_stopped"
    async with running_app(settings) as (app, client):
        again = await (await act(client, "webchat", "status")).get_json()
        assert again["state"]["running"] is False
        assert (await act(client, "webchat", "start")).status_code == 200
        sent = await service(ChannelsAPI, app=app).send("webchat", "s-1", {"text": "hi"})
        assert sent["delivered"] is True
        messages = await context(app).store.events_after("channel:webchat")
        assert messages[0].data == {"session_key": "s-1", "message": {"text": "hi"}}


async def test_unknown_channel_unsupported_action_bad_action_and_no_gate_are_refused(
    settings, store_url
):
    async with running_app(settings) as (_app, client):
        unknown = await act(client, "telegraph", "status")
        assert unknown.status_code == 404
        assert_error(await unknown.get_json(), "channel_not_found")
        unsupported = await act(client, "webchat", "login")
        assert unsupported.status_code == 409
        assert_error(await unsupported.get_json(), "action_not_supported")
        bad = await act(client, "webchat", "reboot")
        assert bad.status_code == 400
        assert "action" in assert_error(await bad.get_json(), "invalid_request_body")["message"]
        denied = await act(client, "webchat", "stop", READER)
        assert denied.status_code == 403
        assert_error(await denied.get_json(), "policy_gate_denied")
    assert await db_rows(store_url, "SELECT channel FROM channels_state") == []


async def test_webhook_channel_probes_and_posts_signed_session_messages(settings, receiver):
    async with running_app(settings) as (app, client):
        probe = await (await act(client, "webhook", "probe")).get_json()
        assert probe["result"]["ok"] is True and probe["result"]["status"] == 204
        assert probe["state"]["detail"]["last_probe"]["ok"] is True
        sent = await service(ChannelsAPI, app=app).send("webhook", "s-9", {"text": "hello"})
        assert sent["delivered"] is True
        assert receiver.verified() == [
            {"type": "probe"},
            {"type": "message", "session_key": "s-9", "message": {"text": "hello"}},
        ]


async def test_webhook_channel_without_a_url_cannot_start(make_settings):
    async with running_app(make_settings()) as (_app, client):
        refused = await act(client, "webhook", "start")
        assert refused.status_code == 409
        assert_error(await refused.get_json(), "channel_not_configured")


async def test_signed_inbound_messages_are_stored_once_and_refused_when_forged(settings, store_url):
    async with running_app(settings) as (app, client):
        body = json.dumps({"session_key": "s-1", "text": "from outside"}).encode()
        accepted = await client.post(INBOUND, data=body, headers=sign(body, "d-1"))
        assert accepted.status_code == 202
        assert (await accepted.get_json())["outcome"] == "accepted"
        replay = await client.post(INBOUND, data=body, headers=sign(body, "d-1"))
        assert replay.status_code == 200
        assert (await replay.get_json())["outcome"] == "duplicate_delivery"
        forged = await client.post(INBOUND, data=body, headers=sign(body, "d-2", secret="wrong"))
        assert forged.status_code == 401
        assert_error(await forged.get_json(), "invalid_signature")
        stale = await client.post(
            INBOUND, data=body, headers=sign(body, "d-3", timestamp=int(time.time()) - 3600)
        )
        assert stale.status_code == 401
        assert_error(await stale.get_json(), "stale_timestamp")
        headers = sign(body, "d-4")
        del headers["X-Gateway-Delivery"]
        missing = await client.post(INBOUND, data=body, headers=headers)
        assert missing.status_code == 400
        assert_error(await missing.get_json(), "invalid_webhook_header")
        bad = json.dumps({"text": "no session"}).encode()
        invalid = await client.post(INBOUND, data=bad, headers=sign(bad, "d-5"))
        assert invalid.status_code == 400
        assert (
            "session_key"
            in assert_error(await invalid.get_json(), "invalid_request_body")["message"]
        )
        assert (await act(client, "webhook", "stop")).status_code == 200
        stopped = await client.post(INBOUND, data=body, headers=sign(body, "d-6"))
        assert stopped.status_code == 409
        assert_error(await stopped.get_json(), "channel_stopped")
        events = await context(app).store.events_after("channel:webhook")
        assert [e.data["text"] for e in events] == ["from outside"]
    rows = await db_rows(
        store_url, "SELECT direction, session_key, delivery FROM channels_messages"
    )
    assert rows == [("in", "s-1", "d-1")]


class Pager:
    """A channel that logs in and out."""

    actions = frozenset({"status", "login", "logout"})

    async def act(self, gateway: Any, action: str, state: ChannelState) -> Any:
        if action == "status":
            return state, {}
        return state.but(logged_in=action == "login"), {"ok": True, "did": action}

    async def send(self, gateway: Any, session_key: str, message: dict[str, Any]) -> Any:
        return {"delivered": True}


async def test_gateway_register_channels_adds_a_channel_driven_by_lifecycle(settings):
    plugin = Plugin(gateway_register_channels=lambda register: register("pager", Pager()))
    async with running_app(settings, extra_plugins=[("pagers", plugin)]) as (_app, client):
        login = await (await act(client, "pager", "login")).get_json()
        assert login["state"]["logged_in"] is True and login["result"] == {
            "ok": True,
            "did": "login",
        }
        assert (await act(client, "pager", "start")).status_code == 409
        logout = await (await act(client, "pager", "logout")).get_json()
        assert logout["state"]["logged_in"] is False


async def test_channels_status_ws_kind_reports_stored_states_to_channel_operators(settings):
    async with running_app(settings) as (_app, client):
        assert (await act(client, "webchat", "stop")).status_code == 200
        answers = {}
        for headers, kind in ((ADMIN, "channels.status.response"), (READER, "error")):
            async with client.websocket("/gateway/ws", headers=headers) as ws:
                frame = {
                    "schema_version": 1,
                    "request_id": "c",
                    "kind": "channels.status.request",
                    "payload": {},
                }
                await ws.send(json.dumps(frame))
                answer = json.loads(await ws.receive())
                while answer["kind"] == "gateway.heartbeat":
                    answer = json.loads(await ws.receive())
            assert answer["kind"] == kind
            answers[kind] = answer["payload"]
        assert answers["error"]["code"] == "policy_gate_denied"
        channels = answers["channels.status.response"]["channels"]
        assert channels["webchat"]["running"] is False and channels["webhook"]["running"] is True
        assert channels["webhook"]["actions"] == ["probe", "start", "status", "stop"]


async def test_old_channel_events_messages_and_delivery_ids_are_pruned(settings, store_url):
    day = 86_400_000
    async with running_app(settings) as (app, client):
        body = json.dumps({"session_key": "s-1", "text": "old"}).encode()
        assert (await client.post(INBOUND, data=body, headers=sign(body, "d-1"))).status_code == 202
        assert (await act(client, "webchat", "stop")).status_code == 200
        retention = context(app).retention
        assert retention is not None
        soon = await retention.prune(now=int(time.time() * 1000) + day)
        # Within 30 days the messages and events stay; the delivery id (window 300 s) goes.
        assert soon.removed["channels"] == {"events": 0, "messages": 0, "deliveries": 1}
        later = await retention.prune(now=int(time.time() * 1000) + 31 * day)
        assert later.removed["channels"] == {"events": 2, "messages": 1, "deliveries": 0}
    assert await db_rows(store_url, "SELECT n FROM channels_messages") == []


OPENAI_KEY = "sk-proj-" + "A1b2C3d4E5" * 4


async def test_webhook_posts_are_scanned_outbound_a_secret_is_redacted_never_received(
    settings, receiver, store_url
):
    async with running_app(settings) as (app, _client):
        sent = await service(ChannelsAPI, app=app).send(
            "webhook", "s-1", {"text": f"the key is {OPENAI_KEY}"}
        )
        assert sent["delivered"] is True
        (posted,) = receiver.verified()
        assert posted["session_key"] == "s-1" and posted["message"]["text"].startswith("the key is")
        assert OPENAI_KEY not in posted["message"]["text"]
        assert all(OPENAI_KEY.encode() not in body for _h, body in receiver.posts)
        stored = await db_rows(store_url, "SELECT body FROM channels_messages")
        assert stored and OPENAI_KEY not in json.dumps([str(r) for r in stored])


async def test_a_blocking_policy_fails_the_webhook_post_and_sends_nothing(settings, receiver):
    async with running_app(settings) as (app, client):
        policy = {
            "mode": "block",
            "applies_to": ["inbound", "model_output", "outbound_http"],
            "secret_detection": {"enabled": True, "mode": "block"},
        }
        put = await client.put("/gateway/safety/policy", json=policy, headers=ADMIN)
        assert put.status_code == 200, await put.get_data(as_text=True)
        with pytest.raises(GatewayError) as refused:
            await service(ChannelsAPI, app=app).send(
                "webhook", "s-1", {"text": f"the key is {OPENAI_KEY}"}
            )
        assert refused.value.status == 422 and refused.value.code == "outbound_blocked"
        assert "nothing was sent" in refused.value.message
        assert receiver.posts == []
        fine = await service(ChannelsAPI, app=app).send("webhook", "s-1", {"text": "hello"})
        assert fine["delivered"] is True and len(receiver.posts) == 1
