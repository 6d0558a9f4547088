"""General plugins, as vLLM's `load_general_plugins()`: every entry point in the group
`vllm_hydra.general_plugins` is a function called once per process, before the engine is
built, so a plugin can register a model architecture (`ModelRegistry.register_model`).

A plugin package may also ship Hydra options under `<package>/conf/` (`conf/model/<name>.yaml`,
`conf/profile/<name>.yaml`); the search-path plugin in hydra_plugins/vllm_hydra_searchpath/
puts each such directory on Hydra's config search path.
"""

from __future__ import annotations

import importlib.util
import logging
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

logger = logging.getLogger(__name__)

PLUGINS_GROUP = "vllm_hydra.general_plugins"

_plugins_loaded = False


class PluginLoadError(RuntimeError):
    """A plugin that failed to import or to run: start-up stops, naming it."""


def general_plugin_entry_points() -> list[EntryPoint]:
    return sorted(entry_points(group=PLUGINS_GROUP), key=lambda ep: ep.name)


def load_general_plugins() -> None:
    """Call every general plugin once in this process. Raises PluginLoadError."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in general_plugin_entry_points():
        try:
            ep.load()()
        except Exception as e:
            raise PluginLoadError(
                f"plugin {ep.name} ({ep.value}, entry point group {PLUGINS_GROUP}) failed: "
                f"{type(e).__name__}: {e}. Fix or uninstall the plugin package."
            ) from e
        logger.info("Loaded general plugin %s (%s).", ep.name, ep.value)


def plugin_conf_dirs() -> list[str]:
    """`pkg://<package>/conf` for each plugin package that ships a conf/ directory (found
    without importing the package, so composing never runs plugin code)."""
    dirs = []
    for ep in general_plugin_entry_points():
        package = ep.module.split(".")[0]
        spec = importlib.util.find_spec(package)
        locations = (spec.submodule_search_locations or []) if spec else []
        if any((Path(loc) / "conf").is_dir() for loc in locations):
            dirs.append(f"pkg://{package}/conf")
    return dirs
