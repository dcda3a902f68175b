"""Carry a local backbone checkpoint to every Ray node through the object store.

Why: the driver resolves the checkpoint to a path on *its* disk (e.g. the cached micro backbone,
or a user's fine-tuned weights). On a cluster, trials, retrains and the Fisher task run on other
nodes where that path does not exist. Instead of asking users to ``file_mounts`` the file, the
driver puts its bytes into Ray's object store once; each node writes them to a node-local cache
file (named by the SHA-256, written atomically) the first time a process there needs it, so a
node fetches the bytes once however many trials it runs. That file sits in a shared temporary
folder, so its SHA-256 is checked again before every use: a file altered since (truncated, corrupted,
replaced) is fetched again, never loaded.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from fairtune_ray.common.errors import InputError

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "FAIRTUNE_CHECKPOINT_CACHE"
"""Overrides the node-local folder the shipped checkpoints are written to."""


class CheckpointError(InputError):
    """A checkpoint file that cannot be used (unreadable, not the bytes it should be, or not fitting the
    backbone); the message names the file."""


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ShippedCheckpoint:
    """A checkpoint file's bytes in the object store (``ref``), with its origin and digest.

    Pickles as a small handle: the bytes travel only when a node has no copy yet.
    """

    origin: str
    sha256: str
    ref: Any  # ray.ObjectRef of the file's bytes

    def __str__(self) -> str:  # messages and MLflow params show where the weights came from
        return self.origin

    def local_path(self, cache_dir: str | os.PathLike | None = None) -> str:
        """The checkpoint as a file on this node: written on first use, and fetched again whenever the
        cached file's SHA-256 is not the recorded one (the trust is in the digest, not in the path)."""
        root = Path(cache_dir or os.environ.get(CACHE_DIR_ENV) or Path(tempfile.gettempdir()) / "fairtune_checkpoints")
        target = root / self.sha256[:32] / Path(self.origin).name
        if target.is_file():
            if file_sha256(target) == self.sha256:
                return str(target)
            log.warning("cached checkpoint %s does not have the SHA-256 of %s (%s...): fetching it again",
                        target, self.origin, self.sha256[:12])
        import ray  # lazy: keeps ray off the CLI's start-up path; only nodes fetching weights need it

        try:
            data = ray.get(self.ref)
        except ray.exceptions.RayError as err:
            if not target.is_file():
                raise
            raise CheckpointError(f"cached checkpoint {target} is not the file it should be (SHA-256 "
                                  f"{self.sha256}) and {self.origin} cannot be fetched again: {err}") from err
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise CheckpointError(f"checkpoint {self.origin}: the shipped bytes do not have the recorded SHA-256 "
                                  f"{self.sha256}; not writing them to {target}")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)  # concurrent writers on one node: the last rename wins, same bytes
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return str(target)


CheckpointLike = Union[str, os.PathLike, ShippedCheckpoint, None]


def ship_checkpoint(path: CheckpointLike) -> CheckpointLike:
    """Put a local checkpoint file into the object store (Ray must be initialised).

    URIs, ``None`` and already-shipped checkpoints are returned unchanged.
    """
    if path is None or isinstance(path, ShippedCheckpoint):
        return path
    p = Path(path).expanduser()
    if not p.is_file():
        return path  # not a local file (a URI, or missing: loading reports it with the path)
    import ray  # lazy: keeps ray off the CLI's start-up path; only the driver shipping weights needs it

    p = p.resolve()
    data = p.read_bytes()  # read once: hashed and shipped
    return ShippedCheckpoint(origin=str(p), sha256=hashlib.sha256(data).hexdigest(), ref=ray.put(data))


def checkpoint_path(checkpoint: CheckpointLike) -> Optional[str]:
    """A path to load on this node, whether ``checkpoint`` is a path or a shipped checkpoint."""
    if checkpoint is None:
        return None
    if isinstance(checkpoint, ShippedCheckpoint):
        return checkpoint.local_path()
    return os.fspath(checkpoint)


def checkpoint_sha256(checkpoint: CheckpointLike) -> str:
    """The weights' digest (cache keys), without fetching a shipped checkpoint's bytes."""
    if isinstance(checkpoint, ShippedCheckpoint):
        return checkpoint.sha256
    return file_sha256(checkpoint)
