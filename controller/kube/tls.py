"""PEM data as file paths without writing files, for APIs that only load certificates by path.

Python's ``ssl`` loads a client certificate and key only from files. Writing them to the temp folder (what
kubernetes_asyncio does) fails on a read-only root filesystem and leaves the private key on disk. On Linux an
anonymous in-memory file (``memfd_create``) reached through ``/proc/self/fd/N`` is a path that touches no
filesystem. Elsewhere (developer machines) a private temporary folder is used and removed at once.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence

__all__ = ["pem_paths"]


def _memfd_supported() -> bool:
    return hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


@contextlib.contextmanager
def pem_paths(blobs: Sequence[bytes | None]) -> Iterator[list[str | None]]:
    """Paths that read back each blob (None stays None), valid inside the ``with`` block only."""
    if _memfd_supported():
        fds: list[int] = []
        try:
            paths: list[str | None] = []
            for i, blob in enumerate(blobs):
                if blob is None:
                    paths.append(None)
                    continue
                fd = os.memfd_create(f"stablelb-pem-{i}", os.MFD_CLOEXEC)
                fds.append(fd)
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view) :]
                paths.append(f"/proc/self/fd/{fd}")
            yield paths
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="stablelb-pem-") as tmp:
        paths = []
        for i, blob in enumerate(blobs):
            if blob is None:
                paths.append(None)
                continue
            path = os.path.join(tmp, f"{i}.pem")
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
                fh.write(blob)
            paths.append(path)
        yield paths
