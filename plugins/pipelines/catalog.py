"""Where pipelines come from: modules in the configured directory and the
``gateway_register_pipelines`` hook. A reload re-reads the directory; a file that fails
to import is reported and its last good pipelines stay. Every definition a run started
with stays reachable by its key, so in-flight runs keep their definition; after a restart
a directory-loaded definition is rebuilt from its stored source (``rebuild``)."""

from __future__ import annotations

import hashlib
import itertools
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

from pydantic import BaseModel

from plugins.pipelines.definition import Pipeline, Step

log = logging.getLogger("gateway.pipelines")

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
_counter = itertools.count()
# A module run from its source keeps (source, file, filename) under this name, so a step
# process can run it the same way (``isolation.py``).
SOURCE_ATTRIBUTE = "__gateway_source__"


def pipelines_directory(directory: str | None, config_file: Path | None) -> Path:
    if not directory:
        return EXAMPLES_DIR
    path = Path(directory)
    if not path.is_absolute() and config_file is not None:
        path = Path(config_file).resolve().parent / path
    return path


@dataclass(frozen=True)
class Definition:
    """Which definition of a pipeline this is: ``origin`` ``directory`` (fingerprint: the
    sha256 of its module's source, kept in ``text``) or ``hook`` (fingerprint: a sha256 of
    its version and step tree, functions named by module and qualname)."""

    origin: str
    fingerprint: str
    source: str
    text: str | None = None
    path: str | None = None  # the module's file (directory pipelines)
    module: str | None = None  # its name in sys.modules (directory pipelines)

    @property
    def digest(self) -> str | None:
        return self.fingerprint.removeprefix("sha256:") if self.origin == "directory" else None

    def record(self, pipeline: Pipeline) -> dict[str, Any]:
        """What a run stores (and shows) about the definition it started with."""
        return {
            "version": pipeline.version,
            "fingerprint": self.fingerprint,
            "origin": self.origin,
            "source": self.source,
        }


class LoadedFile(NamedTuple):
    digest: str
    text: str
    pipelines: list[Pipeline]
    module: str  # its name in sys.modules


def definition_key(pipeline: Pipeline, fingerprint: str) -> str:
    return f"{pipeline.id}@{pipeline.version}#{fingerprint}"


class PipelineCatalog:
    def __init__(self) -> None:
        self.current: dict[str, Pipeline] = {}
        self.keys: dict[str, str] = {}  # pipeline id -> definition key of the current one
        self.definitions: dict[str, Definition] = {}  # pipeline id -> the current one's
        self.by_key: dict[str, Pipeline] = {}
        self.files: dict[str, LoadedFile] = {}  # by path
        self.errors: dict[str, str] = {}
        self.directory: Path | None = None
        self.modules: set[str] = set()  # the names this catalog put in sys.modules

    def get(self, pipeline_id: str) -> Pipeline | None:
        return self.current.get(pipeline_id)

    def definition_of(self, pipeline: Pipeline) -> Definition:
        """The current definition record of ``pipeline`` (a hook-style fingerprint for a
        pipeline object this catalog did not load)."""
        found = pipeline.origin
        if not isinstance(found, Definition):
            found = Definition("hook", code_fingerprint(pipeline), "hook")
            pipeline.origin = found
            self.by_key.setdefault(definition_key(pipeline, found.fingerprint), pipeline)
        return found

    def for_run(self, pipeline_id: str, definition_key: str) -> Pipeline | None:
        """The definition a run started with; the current one if this process never saw it
        (a restart loads only the current files)."""
        return self.by_key.get(definition_key) or self.current.get(pipeline_id)

    def load(
        self, directory: Path, registered: dict[str, Any], in_use: set[str] | None = None
    ) -> dict[str, Any]:
        """Import the directory's files again. The definitions no longer current are let
        go, except those of ``in_use`` (definition keys of unfinished runs), and so are
        the modules no kept definition comes from: reloads do not pile up modules.
        ``in_use`` None keeps every definition."""
        self.directory = directory
        errors: dict[str, str] = {}
        files: dict[str, LoadedFile] = {}
        if directory.is_dir():
            for path in sorted(directory.glob("*.py")):
                if path.name.startswith("_"):
                    continue
                name = str(path)
                try:
                    files[name] = self._load_file(path)
                except BaseException as exc:  # a sys.exit() at import too
                    errors[path.name] = describe_exception(exc)
                    log.warning("pipelines file %s failed to load: %s", path, errors[path.name])
                    if name in self.files:
                        files[name] = self.files[name]  # keep the last good definitions
        elif directory != EXAMPLES_DIR:
            errors[str(directory)] = "the pipelines directory does not exist"
        current: dict[str, Pipeline] = {}
        definitions: dict[str, Definition] = {}
        for pipeline_id, pipeline in registered.items():
            if not isinstance(pipeline, Pipeline):
                errors[f"hook:{pipeline_id}"] = "registered object is not a Pipeline"
                continue
            current[pipeline_id] = pipeline
            definitions[pipeline_id] = Definition("hook", code_fingerprint(pipeline), "hook")
        for name, (digest, text, pipelines, module) in files.items():
            filename = Path(name).name
            for pipeline in pipelines:
                if pipeline.id in current:
                    errors[filename] = f"pipeline id {pipeline.id!r} is defined twice"
                    continue
                pipeline.source = filename
                current[pipeline.id] = pipeline
                definitions[pipeline.id] = Definition(
                    "directory", f"sha256:{digest}", filename, text, name, module
                )
        keys = {i: definition_key(current[i], d.fingerprint) for i, d in definitions.items()}
        self.files, self.current, self.errors = files, current, errors
        self.keys, self.definitions = keys, definitions
        for pipeline_id, key in keys.items():
            current[pipeline_id].origin = definitions[pipeline_id]
            self.by_key[key] = current[pipeline_id]
        if in_use is not None:
            self._let_go(set(keys.values()) | in_use, files)
        return {
            "status": "error" if errors else "ok",
            "pipelines": sorted(current),
            "errors": errors,
        }

    def rebuild(self, pipeline_id: str, record: dict[str, Any], text: str, path: str) -> Pipeline:
        """The pipeline ``pipeline_id`` as defined by a stored module source: executed as
        a module of its own (under a name of its own, not the directory's; ``__file__`` is
        the file it was read from), checked against the version the run recorded, and kept
        for the next run that needs it."""
        digest = hashlib.sha256(text.encode()).hexdigest()
        if f"sha256:{digest}" != record.get("fingerprint"):
            raise ValueError("the stored source does not match the run's fingerprint")
        filename = str(record.get("source") or "pipeline.py")
        module = self._exec_module(
            f"gateway_pipelines_stored_{digest[:16]}_{next(_counter)}",
            text.encode(),
            path,
            f"<stored {filename} sha256:{digest[:16]}>",
        )
        found = [p for p in _pipelines_of(module) if p.id == pipeline_id]
        if not found:
            raise ValueError(f"the stored source of {filename} no longer defines {pipeline_id!r}")
        pipeline = found[0]
        if pipeline.version != record.get("version"):
            raise ValueError(
                f"the stored source defines version {pipeline.version!r}, "
                f"the run started with {record.get('version')!r}"
            )
        pipeline.source = f"{filename} (stored sha256:{digest[:16]})"
        pipeline.origin = Definition(
            "directory", f"sha256:{digest}", filename, text, path, module.__name__
        )
        self.by_key[definition_key(pipeline, f"sha256:{digest}")] = pipeline
        return pipeline

    def _load_file(self, path: Path) -> LoadedFile:
        source = path.read_bytes()
        digest = hashlib.sha256(source).hexdigest()
        module = self._exec_module(
            f"gateway_pipelines_{path.stem}_{next(_counter)}", source, str(path), str(path)
        )
        found = _pipelines_of(module)
        if not found:
            self._forget({module.__name__})
            raise ValueError("the module defines no Pipeline")
        return LoadedFile(digest, source.decode("utf-8", errors="replace"), found, module.__name__)

    def _exec_module(self, module_name: str, source: bytes, file: str, filename: str) -> ModuleType:
        """Run ``source`` as a fresh module (:func:`exec_module`), kept in ``sys.modules``
        until the catalog lets go of its pipelines."""
        module = exec_module(module_name, source, file, filename)
        self.modules.add(module_name)
        return module

    def _let_go(self, keep: set[str], files: dict[str, LoadedFile]) -> None:
        """Drop the definitions whose keys are not in ``keep``, then every module of
        this catalog that no kept pipeline comes from. A run that needs a dropped
        directory definition later rebuilds it from its stored source."""
        self.by_key = {key: p for key, p in self.by_key.items() if key in keep}
        kept = {_module_of(p) for p in self.by_key.values()}
        kept |= {loaded.module for loaded in files.values()}
        self._forget(self.modules - kept)

    def close(self) -> None:
        """Let go of every module this catalog imported (the app stops)."""
        self._forget(set(self.modules))

    def _forget(self, names: set[str]) -> None:
        for name in names:
            sys.modules.pop(name, None)
        self.modules -= names


def _module_of(pipeline: Pipeline) -> str | None:
    """The module a directory pipeline was defined in (the one its steps' code runs in)."""
    origin = pipeline.origin
    return origin.module if isinstance(origin, Definition) else None


def exec_module(module_name: str, source: bytes, file: str, filename: str) -> ModuleType:
    """Run ``source`` as a fresh module. It is registered in ``sys.modules`` under its
    unique name (pydantic resolves a model's annotations through it)."""
    module = ModuleType(module_name)
    module.__file__ = file
    setattr(module, SOURCE_ATTRIBUTE, (source, file, filename))
    sys.modules[module_name] = module
    try:
        # Pipelines modules are the operator's own code, trusted like a plugin.
        exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def describe_exception(exc: BaseException) -> str:
    """``SystemExit: 3``; the bare type name when the exception has no message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _pipelines_of(module: ModuleType) -> list[Pipeline]:
    found: list[Pipeline] = []
    listed = getattr(module, "PIPELINES", None)
    candidates = list(listed) if listed is not None else list(vars(module).values())
    for value in candidates:
        if isinstance(value, Pipeline) and all(value is not p for p in found):
            found.append(value)
    return found


def code_fingerprint(pipeline: Pipeline) -> str:
    """A fingerprint of a pipeline defined in code (``gateway_register_pipelines``): its
    version and step tree, each function named by module and qualname, so it is the same
    in every process that imports the same code."""
    shape = {
        "id": pipeline.id,
        "version": pipeline.version,
        "input_model": _name(pipeline.input_model),
        "output_model": _name(pipeline.output_model),
        "output": _name(pipeline.output),
        "steps": [_shape(step) for step in pipeline.steps],
    }
    text = repr(shape).encode()
    return "code:sha256:" + hashlib.sha256(text).hexdigest()


def _shape(step: Step) -> dict[str, Any]:
    return {
        "id": step.id,
        "kind": step.kind,
        "options": [step.retries, step.backoff_seconds, step.timeout_seconds],
        "continue_on_error": step.continue_on_error,
        "when": _name(step.when),
        "config": {key: _value(value) for key, value in sorted(step.config.items())},
    }


def _value(value: Any) -> Any:
    if isinstance(value, Step):
        return _shape(value)
    if isinstance(value, list | tuple):
        return [_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _value(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return _name(value)


def _name(value: Any) -> str | None:
    """Module and qualname of a function or class; the type's for any other object (its
    repr may hold a memory address, which differs between processes)."""
    if value is None:
        return None
    target = value if callable(value) and hasattr(value, "__qualname__") else type(value)
    if isinstance(value, type) and issubclass(value, BaseModel):
        target = value
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"
