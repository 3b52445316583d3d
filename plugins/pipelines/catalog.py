"""Where pipelines come from: modules in the configured directory and the
``gateway_register_pipelines`` hook. A reload re-reads the directory; a file that fails
to import is reported and its last good pipelines stay. Every definition a run started
with stays reachable by its key, so in-flight runs keep their definition."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import logging
import sys
from pathlib import Path
from typing import Any

from plugins.pipelines.definition import Pipeline

log = logging.getLogger("gateway.pipelines")

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
_counter = itertools.count()


def pipelines_directory(section: dict[str, Any], config_file: Path | None) -> Path:
    raw = section.get("directory")
    if not raw:
        return EXAMPLES_DIR
    path = Path(str(raw))
    if not path.is_absolute() and config_file is not None:
        path = Path(config_file).resolve().parent / path
    return path


class PipelineCatalog:
    def __init__(self) -> None:
        self.current: dict[str, Pipeline] = {}
        self.keys: dict[str, str] = {}  # pipeline id -> definition key of the current one
        self.by_key: dict[str, Pipeline] = {}
        self.files: dict[str, tuple[str, list[Pipeline]]] = {}  # path -> (digest, pipelines)
        self.errors: dict[str, str] = {}
        self.directory: Path | None = None

    def get(self, pipeline_id: str) -> Pipeline | None:
        return self.current.get(pipeline_id)

    def for_run(self, pipeline_id: str, definition_key: str) -> Pipeline | None:
        """The definition a run started with; the current one if this process never saw it
        (a restart loads only the current files)."""
        return self.by_key.get(definition_key) or self.current.get(pipeline_id)

    def load(self, directory: Path, registered: dict[str, Any]) -> dict[str, Any]:
        self.directory = directory
        errors: dict[str, str] = {}
        files: dict[str, tuple[str, list[Pipeline]]] = {}
        if directory.is_dir():
            for path in sorted(directory.glob("*.py")):
                if path.name.startswith("_"):
                    continue
                name = str(path)
                try:
                    files[name] = _load_file(path)
                except Exception as exc:
                    errors[path.name] = f"{type(exc).__name__}: {exc}"
                    log.warning("pipelines file %s failed to load: %s", path, exc)
                    if name in self.files:
                        files[name] = self.files[name]  # keep the last good definitions
        elif directory != EXAMPLES_DIR:
            errors[str(directory)] = "the pipelines directory does not exist"
        current: dict[str, Pipeline] = {}
        keys: dict[str, str] = {}
        for pipeline_id, pipeline in registered.items():
            if not isinstance(pipeline, Pipeline):
                errors[f"hook:{pipeline_id}"] = "registered object is not a Pipeline"
                continue
            current[pipeline_id] = pipeline
            keys[pipeline_id] = f"{pipeline_id}@{pipeline.version}#code"
        for name, (digest, pipelines) in files.items():
            for pipeline in pipelines:
                if pipeline.id in current:
                    errors[Path(name).name] = f"pipeline id {pipeline.id!r} is defined twice"
                    continue
                pipeline.source = Path(name).name
                current[pipeline.id] = pipeline
                keys[pipeline.id] = f"{pipeline.id}@{pipeline.version}#{digest}"
        self.files, self.current, self.keys, self.errors = files, current, keys, errors
        for pipeline_id, key in keys.items():
            self.by_key[key] = current[pipeline_id]
        return {
            "status": "error" if errors else "ok",
            "pipelines": sorted(current),
            "errors": errors,
        }


def _load_file(path: Path) -> tuple[str, list[Pipeline]]:
    source = path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    module_name = f"gateway_pipelines_{path.stem}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    found: list[Pipeline] = []
    listed = getattr(module, "PIPELINES", None)
    candidates = list(listed) if listed is not None else list(vars(module).values())
    for value in candidates:
        if isinstance(value, Pipeline) and all(value is not p for p in found):
            found.append(value)
    if not found:
        raise ValueError("the module defines no Pipeline")
    return digest, found
