"""The Hugging Face Hub as a local folder, for offline tests of `promptloop.hub`.

`local_hub(root)` is a context manager under which
- `HfApi.create_repo` / `HfApi.upload_folder` write a model repo into `root` laid out as huggingface_hub's cache
  lays out a downloaded repo: `models--OWNER--NAME/refs/main` holding the commit hash and
  `models--OWNER--NAME/snapshots/HASH/...` the files (every upload a new commit: the files of the previous one,
  overwritten by the uploaded ones, as an upload to the Hub keeps the files it does not replace);
- huggingface_hub reads its cache from `root` in offline mode, so `hf_hub_download` / `snapshot_download`, and with
  them `VLMPolicy.from_pretrained(repo_id)`, run their real code against the pushed files and never the network.

    with local_hub(tmp_path / "hub") as hub:
        policy.push_to_hub("me/tiny-policy")
        VLMPolicy.from_pretrained("me/tiny-policy")   # from hub / "models--me--tiny-policy" / "snapshots" / ...

Only the two HfApi methods are replaced; everything that reads the Hub is huggingface_hub's own code.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCAL_USER = "local-user"  # the namespace of a repo created without one


def repo_folder(root: str | Path, repo_id: str) -> Path:
    """The cache folder of model repo `repo_id` under `root` (models--OWNER--NAME)."""
    if "/" not in repo_id:
        repo_id = f"{LOCAL_USER}/{repo_id}"
    return Path(root) / ("models--" + repo_id.replace("/", "--"))


def snapshot(root: str | Path, repo_id: str) -> Path:
    """The folder of the repo's latest commit."""
    folder = repo_folder(root, repo_id)
    return folder / "snapshots" / (folder / "refs" / "main").read_text().strip()


@contextlib.contextmanager
def local_hub(root: str | Path) -> Iterator[Path]:
    """See the module docstring; yields `root`."""
    from huggingface_hub import HfApi, RepoUrl, constants

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)

    def create_repo(self: Any, repo_id: str, **kwargs: Any) -> RepoUrl:
        full = repo_id if "/" in repo_id else f"{LOCAL_USER}/{repo_id}"
        folder = repo_folder(root, full)
        if folder.exists() and not kwargs.get("exist_ok", False):
            raise FileExistsError(f"repo {full} exists")
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        return RepoUrl(f"https://huggingface.co/{full}")

    def upload_folder(self: Any, *, repo_id: str, folder_path: str | Path, commit_message: str | None = None,
                      **kwargs: Any) -> str:
        folder = repo_folder(root, repo_id)
        if not (folder / "refs").is_dir():
            raise FileNotFoundError(f"repo {repo_id} does not exist (create_repo first)")
        files = sorted(p for p in Path(folder_path).rglob("*") if p.is_file() and ".git" not in p.parts)
        digest = hashlib.sha1((commit_message or "").encode())
        for p in files:
            digest.update(p.relative_to(folder_path).as_posix().encode())
            digest.update(p.read_bytes())
        head = folder / "refs" / "main"
        previous = folder / "snapshots" / head.read_text().strip() if head.exists() else None
        digest.update(str(previous).encode())
        commit = digest.hexdigest()
        target = folder / "snapshots" / commit
        if previous is not None and previous.is_dir():
            shutil.copytree(previous, target, dirs_exist_ok=True)
        for p in files:
            dest = target / p.relative_to(folder_path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dest)
        head.write_text(commit)
        return f"https://huggingface.co/{repo_id}/commit/{commit}"

    saved = (HfApi.create_repo, HfApi.upload_folder, constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE)
    HfApi.create_repo = create_repo  # type: ignore[method-assign,assignment]
    HfApi.upload_folder = upload_folder  # type: ignore[method-assign,assignment]
    constants.HF_HUB_CACHE = str(root)
    constants.HF_HUB_OFFLINE = True
    try:
        yield root
    finally:
        HfApi.create_repo, HfApi.upload_folder, constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = saved  # type: ignore[method-assign]


__all__ = ["LOCAL_USER", "local_hub", "repo_folder", "snapshot"]
