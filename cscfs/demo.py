"""The embedded default: a demo share in a local folder, mounted, with a few files."""

from __future__ import annotations

import os
import shutil
import sys

import click

from .config import Options
from .mounts import fuse_mounts

_FILES = {
    "README.txt": "This folder lives on the demo server and is served from cscfs's cache.\n",
    "notes/todo.md": "# To do\n\n- edit me in the mount\n- watch the change reach the server\n",
    "reports/2026-q3.csv": "quarter,revenue\nQ1,120\nQ2,135\nQ3,150\n",
}


def run_demo(base: str) -> int:
    from . import daemon

    server = os.path.join(base, "server")
    mountpoint = os.path.join(base, "Documents")
    daemon.clear_stale_mount(mountpoint)  # a demo whose daemon died: mount it again
    if mountpoint in fuse_mounts():
        click.echo(f"the demo is already mounted at {mountpoint}")
    else:
        for rel, text in _FILES.items():
            path = os.path.join(server, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not os.path.exists(path):
                with open(path, "w") as f:
                    f.write(text)
        os.makedirs(mountpoint, exist_ok=True)
        plan = daemon.plan_mount(server, mountpoint, None)  # a folder: no credentials
        daemon.start_background(plan, Options())
        click.echo(f"mounted the demo share {server} at {mountpoint}")
    exe = shutil.which("cscfs") or os.path.join(os.path.dirname(sys.executable), "cscfs")
    cscfs = "cscfs" if shutil.which("cscfs") == exe else exe
    click.echo(f"""
Everything here is available offline: filled in the background right after mount.
Try next:
  ls -l {mountpoint}
  echo "hello" >> {mountpoint}/notes/todo.md     # uploaded 2 s after close
  cat {server}/notes/todo.md                      # the server has it
  getfattr -n user.cscfs.status {mountpoint}/README.txt
  {cscfs} status {mountpoint}                      # "available offline: 3 of 3 pinned files"
  {cscfs} offline {mountpoint}                     # work offline: everything still reads,
  cat {mountpoint}/README.txt                      #   then edit on both sides
  {cscfs} sync {mountpoint}; {cscfs} conflicts {mountpoint}
  {cscfs} online {mountpoint}
  {cscfs} check {mountpoint}
  {cscfs} unmount {mountpoint}""")
    return 0
