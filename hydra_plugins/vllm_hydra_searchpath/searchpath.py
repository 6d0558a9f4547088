"""Hydra search-path plugin: the conf/ directories of installed vllm_hydra plugin packages
(vllm_hydra/plugins/), so `serve.py model=<a plugin's option>` composes."""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class VllmHydraPluginsSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from vllm_hydra.plugins import plugin_conf_dirs

        for path in plugin_conf_dirs():
            search_path.append(provider="vllm_hydra-plugin", path=path)
