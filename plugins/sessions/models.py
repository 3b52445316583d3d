"""Request and response bodies of the sessions and memory routes (and of the service in
``contract.py``, which hands out the same records)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# Session keys and entry ids name rows, never files: a short safe set of characters.
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$"
Tag = Annotated[str, StringConstraints(pattern=TAG_PATTERN)]
KEY_RULE = "1 to 128 characters: letters, digits and . _ : - (starting with a letter or digit)"

Role = Literal["system", "user", "assistant", "tool"]
MemoryType = Literal[
    "identity", "goal", "decision", "todo", "preference", "fact", "event", "observation"
]
RelationType = Literal[
    "related_to", "updates", "contradicts", "caused_by", "result_of", "part_of", "depends_on"
]
# The importance an entry gets when its writer gives none (after Tau's memory types).
DEFAULT_IMPORTANCE: dict[str, float] = {
    "identity": 1.0,
    "goal": 0.9,
    "decision": 0.85,
    "preference": 0.8,
    "todo": 0.7,
    "fact": 0.6,
    "event": 0.5,
    "observation": 0.4,
}
MAX_INT64 = 2**63 - 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- sessions ----------------------------------------------------------------------------


class AppendRequest(Strict):
    role: Role
    content: str = Field(description="the message text (413 above max_content_chars)")
    metadata: dict[str, Any] = Field(default_factory=dict)
    parent_id: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{32}$",
        description="append under this message (a branch within the session) instead of the head",
    )


class MessageRecord(BaseModel):
    id: str
    seq: int = Field(description="the message's place in the session's append order, from 1")
    parent_id: str | None
    role: str
    content: str
    metadata: dict[str, Any]
    created_ms: int


class SessionSummary(BaseModel):
    session_key: str
    session_id: str = Field(description="the store's id of the session (unique over owners)")
    owner: str
    source: str = Field(description="api, chat, responses, pipeline or a plugin's name")
    user: str | None = Field(None, description="the end user a chat client named (`user`)")
    head_id: str | None = Field(description="the last message of the current conversation")
    message_count: int = Field(description="messages stored in the session, every branch")
    metadata: dict[str, Any]
    created_ms: int
    last_activity_ms: int


class SessionDetail(SessionSummary):
    lineage: list[str] = Field(description="message ids from the root to the head")
    messages: list[MessageRecord] = Field(description="the current conversation: the lineage")
    entries: list[MessageRecord] = Field(description="every stored message, by seq (paged)")
    next_after_seq: int | None = Field(None, description="pass as ?after_seq= for more entries")


class SessionList(BaseModel):
    sessions: list[SessionSummary]
    total: int
    next_offset: int | None = None


class SessionListQuery(BaseModel):
    limit: int = Field(50, ge=1, le=500)
    offset: int = Field(0, ge=0, le=MAX_INT64)
    sort: Literal["last_activity", "created"] = "last_activity"
    order: Literal["desc", "asc"] = "desc"
    source: str | None = Field(None, max_length=40)
    user: str | None = Field(None, max_length=256)


class OwnerQuery(BaseModel):
    owner: str | None = Field(
        None,
        max_length=300,
        description="whose session (a principal key, token:ci); read-all or act-all gates",
    )


class SessionQuery(OwnerQuery):
    after_seq: int = Field(0, ge=0, le=MAX_INT64)
    limit: int = Field(200, ge=1, le=1000)


class AppendResponse(BaseModel):
    message: MessageRecord
    session: SessionSummary


class BranchRequest(Strict):
    entry_id: str | None = Field(
        None, pattern=r"^[0-9a-f]{32}$", description="branch at this message (default: the head)"
    )
    new_session_key: str | None = Field(
        None, pattern=KEY_PATTERN, description="the new session's key (default: generated)"
    )


# -- memory ------------------------------------------------------------------------------


class MemoryScope(Strict):
    workspace_id: str | None = Field(None, pattern=KEY_PATTERN)
    channel_id: str | None = Field(None, pattern=KEY_PATTERN)
    actor_id: str | None = Field(None, pattern=KEY_PATTERN)


class MemoryRelation(Strict):
    target_id: str = Field(pattern=KEY_PATTERN, description="another entry of the session")
    relation_type: RelationType = "related_to"
    weight: float = Field(1.0, ge=0, le=1)


class MemoryEntryRequest(Strict):
    summary: str = Field(min_length=1)
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    facts: list[str] = Field(default_factory=list, max_length=200)
    memory_type: MemoryType = "fact"
    importance: float | None = Field(
        None,
        ge=0,
        le=1,
        description="0 to 1; default by memory_type (identity 1.0 ... observation 0.4)",
    )
    scope: MemoryScope = Field(default_factory=MemoryScope)
    relations: list[MemoryRelation] = Field(default_factory=list, max_length=100)
    source_event_key: str | None = Field(None, max_length=256)


class MemoryEntryRecord(BaseModel):
    entry_id: str
    session_key: str
    summary: str
    tags: list[str]
    facts: list[str]
    memory_type: str
    importance: float
    scope: MemoryScope
    relations: list[MemoryRelation]
    source_event_key: str | None
    created_ms: int
    updated_ms: int
    last_accessed_ms: int | None
    access_count: int
    deleted_ms: int | None = None
    score: float | None = Field(None, description="the search's blended score (searches only)")


class MemoryDocumentRequest(Strict):
    document: str


class MemoryView(BaseModel):
    session_key: str
    document: str | None
    document_updated_ms: int | None
    entries: list[MemoryEntryRecord]
    query: str | None = None


class MemoryQuery(OwnerQuery):
    query: str | None = Field(None, max_length=1000, description="full-text search")
    memory_type: MemoryType | None = None
    workspace_id: str | None = Field(None, pattern=KEY_PATTERN)
    channel_id: str | None = Field(None, pattern=KEY_PATTERN)
    actor_id: str | None = Field(None, pattern=KEY_PATTERN)
    tags: str | None = Field(None, max_length=2000, description="comma-separated; entries with all")
    limit: int = Field(20, ge=1, le=200)
    deleted: bool = Field(False, description="list the deleted entries instead")


class EntryQuery(OwnerQuery):
    deleted: bool = Field(False, description="read a deleted entry")


class GraphQuery(OwnerQuery):
    max_nodes: int = Field(200, ge=1, le=5000, description="the most important entries first")
    min_edge_weight: float = Field(0.0, ge=0, le=1)
    relation_types: str | None = Field(None, max_length=500, description="comma-separated")
    memory_type: MemoryType | None = None
    workspace_id: str | None = Field(None, pattern=KEY_PATTERN)
    channel_id: str | None = Field(None, pattern=KEY_PATTERN)
    actor_id: str | None = Field(None, pattern=KEY_PATTERN)


class AllGraphQuery(GraphQuery):
    session_key: str | None = Field(None, pattern=KEY_PATTERN)


class GraphNode(BaseModel):
    id: str = Field(description="the entry id; <session_id>/<entry_id> in the all-sessions graph")
    entry_id: str
    session_key: str
    summary: str
    memory_type: str
    importance: float
    tags: list[str]
    scope: MemoryScope


class GraphEdge(BaseModel):
    source: str
    target: str
    relation_type: str
    weight: float


class MemoryGraph(BaseModel):
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    truncated: bool = Field(description="more entries matched than max_nodes")


class Deleted(BaseModel):
    deleted: str
    session_key: str
