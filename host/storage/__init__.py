"""Storage: one async interface over SQLite (embedded default) and PostgreSQL."""

from host.storage.migrations import Migration
from host.storage.records import AuthSession, Event, now_ms
from host.storage.store import Store, StoreError
from host.storage.urls import sqlite_url

__all__ = ["AuthSession", "Event", "Migration", "Store", "StoreError", "now_ms", "sqlite_url"]
