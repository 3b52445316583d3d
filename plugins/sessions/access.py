"""Which owner's session a request means. A session key is unique per owner: the key in
the path names the caller's own session, unless ``?owner=`` names another principal's
(which needs ``allow_session_read_all`` to read and ``allow_session_act_all`` to act).
A read-all holder naming no owner, with no session of that key of its own, reads the one
other principal's session of that key (409 ``session_ambiguous`` when several have one).
Another principal's session that the caller may not read is 404, as if it did not exist.
"""

from __future__ import annotations

from host.api import GatewayError, Principal, can_read, owner_key, require_owner
from plugins.sessions import errors
from plugins.sessions.gates import GATE_ACT_ALL, GATE_READ_ALL
from plugins.sessions.service import SessionsStore, check_key


async def resolve(
    store: SessionsStore,
    principal: Principal,
    key: str,
    owner: str | None,
    *,
    act: bool = False,
    creates: bool = False,
) -> str:
    """The owner of the session ``key`` the request means. ``creates``: the request may
    create the session (an append, a memory write), so without ``owner`` it is always
    the caller's own."""
    check_key(key)
    mine = owner_key(principal)
    act_all = GATE_ACT_ALL if act else None
    if owner is not None and owner != mine:
        require_owner(
            principal,
            owner,
            read_all=GATE_READ_ALL,
            act_all=act_all,
            not_found=errors.session_not_found(key),
        )
        return owner
    if creates or owner == mine or await store.exists(mine, key):
        return mine
    if not can_read(principal, None, GATE_READ_ALL):
        raise errors.session_not_found(key)
    owners = await store.owners_of(key)
    if not owners:
        raise errors.session_not_found(key)
    if len(owners) > 1:
        raise GatewayError(
            409,
            "session_ambiguous",
            f"{len(owners)} principals have a session {key!r}: name one with ?owner=",
            param="owner",
        )
    require_owner(
        principal,
        owners[0],
        read_all=GATE_READ_ALL,
        act_all=act_all,
        not_found=errors.session_not_found(key),
    )
    return owners[0]
