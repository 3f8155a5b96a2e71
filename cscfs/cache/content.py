"""Content files: one regular file per cached item, named by our inode number."""

from __future__ import annotations

import os


class ContentStore:
    def __init__(self, root: str):
        self.root = root
        os.makedirs(root, mode=0o700, exist_ok=True)

    def path(self, ino: int) -> str:
        return os.path.join(self.root, f"{ino % 256:02x}", str(ino))

    def open(self, ino: int, truncate: bool = False) -> int:
        path = self.path(ino)
        flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if truncate else 0)
        try:
            return os.open(path, flags, 0o600)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            return os.open(path, flags, 0o600)

    def size(self, ino: int) -> int | None:
        try:
            return os.stat(self.path(ino)).st_size
        except FileNotFoundError:
            return None

    def remove(self, ino: int) -> None:
        try:
            os.unlink(self.path(ino))
        except FileNotFoundError:
            pass

    def truncate(self, ino: int, size: int) -> None:
        fd = self.open(ino)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)

    def all_inos(self) -> set[int]:
        out = set()
        for sub in os.listdir(self.root):
            subdir = os.path.join(self.root, sub)
            if os.path.isdir(subdir):
                out.update(int(name) for name in os.listdir(subdir) if name.isdigit())
        return out
