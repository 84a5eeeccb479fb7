"""A checkpoint or a run folder is data, never code.

A run's config travels inside its checkpoint (and as run_config.yaml in its folder), and Hydra's
`instantiate` calls whatever a `_target_` names. So a config read from a file may name only the
targets the project's own conf/ declares, and holds plain values only (no `${...}` interpolation,
which would run resolvers); anything else is refused before anything is built.
"""
from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from kgqa.errors import CheckpointError

CONF = Path(__file__).resolve().parents[1] / "conf"
# targets renamed since a stored config may have been written (old -> new): read as their new names
RENAMED_TARGETS = {
    "kgqa.kbfolder.KbFolder": "kgqa.kb.folder.KbFolder",
    "kgqa.data.sources.FileKB": "kgqa.kb.sources.FileKB",
    "kgqa.data.sources.GoldKB": "kgqa.kb.sources.GoldKB",
    "kgqa.data.sources.SynthKB": "kgqa.kb.sources.SynthKB",
}


def walk(node: Any, path: str = ""):
    """(dotted path, key, value) of every mapping entry, lists included."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            yield where, key, value
            yield from walk(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


@cache
def project_targets() -> frozenset[str]:
    """Every `_target_` a file under conf/ declares: what kgqa itself may instantiate."""
    targets = set()
    for path in CONF.rglob("*.yaml"):
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        targets |= {value for _, key, value in walk(loaded) if key == "_target_"}
    return frozenset(targets)


def renamed(node: Any) -> Any:
    """`node` with every `_target_` that RENAMED_TARGETS lists under its new name."""
    if isinstance(node, dict):
        return {key: RENAMED_TARGETS.get(value, value) if key == "_target_" and isinstance(value, str)
                else renamed(value) for key, value in node.items()}
    if isinstance(node, list):
        return [renamed(value) for value in node]
    return node


def trusted_config(config: Any, source: str | Path) -> dict:
    """`config` (a dict or DictConfig read from `source`) as a plain dict, its renamed targets under their new
    names, once every `_target_` in it is one of the project's and no value is an interpolation; else a
    CheckpointError naming the key."""
    if OmegaConf.is_config(config):
        config = OmegaConf.to_container(config, resolve=False)
    if not isinstance(config, dict):
        raise CheckpointError(f"{source}: the stored run config is not a mapping ({type(config).__name__})")
    config = renamed(config)
    allowed = project_targets()
    for where, key, value in walk(config):
        if not isinstance(key, str):
            raise CheckpointError(f"{source}: the stored run config has a non-text key at {where}")
        if key == "_target_" and value not in allowed:
            raise CheckpointError(f"{source}: {where}={value!r} is not one of kgqa's own targets (conf/); "
                                  "refusing to call it, nothing was run")
        if isinstance(value, str) and "${" in value:
            raise CheckpointError(f"{source}: {where} holds an interpolation ({value[:60]!r}); a stored run "
                                  "config holds plain values only, refusing it")
    return config
