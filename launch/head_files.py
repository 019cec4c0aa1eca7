"""Shared by the launchers that add a side file to a head folder (launch.draft_vocab,
launch.build_pair_prior): read the folder's config and refuse to overwrite without --force."""

import os


def open_head_for(head: str, file_name: str, force: bool):
    """(the head's HeadConfig, the side file's path); SystemExit naming the problem when the folder
    is not a head or the file exists and `force` is off."""
    from sglang_jetspec.core.head_config import HeadConfig

    try:
        cfg = HeadConfig.load(head)
    except (OSError, ValueError) as e:
        raise SystemExit(f"--head {head}: {e}") from e
    path = os.path.join(head, file_name)
    if os.path.exists(path) and not force:
        raise SystemExit(f"{path} exists; pass --force to replace it")
    return cfg, path
