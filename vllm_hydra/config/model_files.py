"""Finding a checkpoint on disk: a local directory, or a hub id in the Hugging Face cache.

Nothing here downloads: this machine and CI reach no model hub, and the config stage must not
block on the network. A hub id that is not cached is planned from committed facts (dry runs,
`load.format=dummy`) or refused with the fix.
"""

from __future__ import annotations

from pathlib import Path


def looks_like_hub_id(path: str) -> bool:
    """`org/name`, not an existing or absolute path."""
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not path.startswith((".", "~", "/"))


def resolve_model_dir(path: str, revision: str | None, download_dir: str | None) -> Path | None:
    """The local directory holding `path`: itself, or its Hugging Face cache snapshot."""
    local = Path(path).expanduser()
    if local.is_dir():
        return local.resolve()
    if not looks_like_hub_id(path):
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = snapshot_download(
            repo_id=path, revision=revision, cache_dir=download_dir, local_files_only=True
        )
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None
    return Path(snapshot)


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a checkpoint (an index's shards, or every *.safetensors)."""
    return sorted(model_dir.glob("*.safetensors"))
