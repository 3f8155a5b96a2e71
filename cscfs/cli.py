"""The `cscfs` command. main(argv) -> exit code, so tests call it in-process.

Commands other than mount and demo ask the mount's daemon over its control socket;
an error it answers comes back with its exit code. Errors are one line on stderr.

Exit codes: 0 ok; 1 a fault was found (check), an operation failed, the server is
unreachable (sync) or the daemon failed or stopped answering; 2 bad input (usage,
config, arguments the daemon refused, no daemon at that mount point); 3 sync
finished but conflicts are open.
"""

from __future__ import annotations

import json
import os
import sys
import time

import click

from . import control
from .config import OPTION_HELP, load_options, socket_path
from .errors import CscfsError, UserError
from .textfmt import size_text

FORCE_ANSWER_S = 10  # how long `unmount --force` waits for the daemon to answer
DAEMON_EXIT_S = 30  # how long unmount waits for the daemon to exit once it answered


def _ask(mountpoint: str, payload: dict, timeout: float | None = 30.0, on_progress=None) -> dict:
    mountpoint = os.path.abspath(os.path.expanduser(mountpoint))
    try:
        return control.request(socket_path(mountpoint), payload, timeout, on_progress)
    except control.DaemonMissing:
        raise UserError(f"{mountpoint} is not a cscfs mount (no daemon answers)") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cscfs")
def cli() -> None:
    """An offline-capable network folder: a server folder mounted through a local cache."""


@cli.command()
@click.argument("server")
@click.argument("mountpoint")
@click.option("--data-dir", metavar="DIR",
              help="where the cache lives (default: a folder per mount point in the user "
                   "data dir)")
@click.option("--foreground", is_flag=True, help="stay in the foreground until unmounted")
@click.option("--write-back-delay", type=click.FloatRange(min=0), metavar="S",
              help=OPTION_HELP["write_back_delay"] + " (default 2)")
@click.option("--credentials", "credentials_file", metavar="FILE",
              help="SMB: a cifs-style credentials file (username=, password=, domain=), "
                   "readable by you only")
@click.option("--probe", metavar="HOST:PORT",
              help="a folder server's host to probe for reachability and latency "
                   "(the NFS or CIFS server behind the folder)")
@click.option("--allow-other", is_flag=True, default=None,
              help=OPTION_HELP["allow_other"])
@click.option("--ready-fd", type=int, hidden=True)
@click.option("--secret-stdin", is_flag=True, hidden=True)
@click.option("--server-state", type=click.Choice(["reachable", "unreachable"]), hidden=True)
def mount(server, mountpoint, data_dir, foreground, write_back_delay, credentials_file,
          probe, allow_other, ready_fd, secret_stdin, server_state):
    """Mount SERVER at MOUNTPOINT through the local cache.

    SERVER is a folder (a local directory, an NFS or CIFS mount) or an SMB share,
    smb://[DOMAIN;]USER@HOST[:PORT]/SHARE[/PATH]. The SMB password comes from
    --credentials FILE, the CSCFS_SMB_PASSWORD environment variable or the keyring.
    """
    from . import daemon

    options = load_options(write_back_delay=write_back_delay, probe=probe,
                           allow_other=allow_other)
    try:
        creds = _smb_credentials(server, credentials_file, secret_stdin)
        plan = daemon.plan_mount(server, mountpoint, data_dir, options, creds, server_state)
    except UserError as exc:
        if ready_fd is not None:
            os.write(ready_fd, f"error: {exc}\n".encode())
        raise
    if foreground:
        return daemon.run_foreground(plan, options, ready_fd)
    daemon.start_background(plan, options)
    state = "" if plan.server_reachable else " (server unreachable: working from the cache)"
    click.echo(f"mounted {plan.store.url} at {plan.mountpoint}{state}")
    return 0


def _smb_credentials(server: str, credentials_file: str | None, secret_stdin: bool):
    if not server.startswith("smb://"):
        if credentials_file:
            raise UserError("--credentials is for smb:// servers")
        return None
    from . import credentials
    from .remote.smb import parse_url

    if secret_stdin:
        return credentials.Credentials(**json.loads(sys.stdin.readline()))
    target = parse_url(server)
    return credentials.resolve(target.username, target.domain, target.host, credentials_file)


@cli.command()
@click.argument("mountpoint")
@click.option("--force", is_flag=True, help="do not wait for pending uploads "
              "(they stay in the cache and upload at the next mount)")
def unmount(mountpoint, force):
    """Unmount MOUNTPOINT, after uploading pending changes unless --force. Returns once
    its daemon has exited: the data dir is free for the next mount."""
    from . import mounts
    from .config import canonical_mountpoint, daemon_record_path
    from .daemon import clear_stale_mount

    mp = canonical_mountpoint(os.path.expanduser(mountpoint))
    record = mounts.read_record(daemon_record_path(mp))
    if clear_stale_mount(mp) is not None:  # its daemon is dead: nobody to ask
        click.echo(f"removed the stale mount at {mp} (its daemon had stopped)")
        return 0
    try:
        # Forced, a daemon that does not answer at once is stuck: end its mount anyway.
        answer = _ask(mp, {"cmd": "unmount", "force": force},
                      timeout=FORCE_ANSWER_S if force else None)
    except CscfsError:  # no daemon, it died meanwhile, or it does not answer
        state = clear_stale_mount(mp, even_if_alive=force)
        if state == mounts.ALIVE:
            click.echo(f"unmounted {mp}: its daemon did not answer, so its connection was "
                       f"aborted; changed files stay in the cache for the next mount")
            return 0
        if state is not None:
            click.echo(f"removed the stale mount at {mp} (its daemon had stopped)")
            return 0
        raise
    deadline = time.monotonic() + DAEMON_EXIT_S
    while mp in mounts.fuse_mounts() and time.monotonic() < deadline:
        time.sleep(0.05)
    if record is not None and not mounts.wait_gone(record, deadline - time.monotonic()):
        raise CscfsError(f"{mp}: the daemon (pid {record.pid}) has not exited after "
                         f"{DAEMON_EXIT_S} s; its data dir stays in use until it does")
    if answer["pending"]:
        click.echo(f"unmounted {mp}; {answer['pending']} changed files not uploaded yet "
                   f"(kept in the cache, uploaded at the next mount)")
    else:
        click.echo(f"unmounted {mp}; uploaded {answer['uploaded']} pending files")
    return 0


@cli.command()
@click.argument("mountpoint")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status(mountpoint, as_json):
    """Show the server, mode, pending uploads and cache use of MOUNTPOINT."""
    s = _ask(mountpoint, {"cmd": "status"})
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return 0
    last = s["last_upload"]
    rows = [
        ("server", s["server"]),
        ("mount point", s["mountpoint"]),
        ("mode", f"{s['mode']} since {_when(s['mode_since'])} ({s['mode_reason']})"),
        ("median RTT", "unknown" if s["median_rtt_ms"] is None else f"{s['median_rtt_ms']:.1f} ms"),
        ("pending uploads", s["pending_uploads"]),
        ("failing uploads", _failures(s.get("upload_failures") or [])),
        ("pending changes", f"{s['pending_changes']} (folder changes made offline)"),
        ("open conflicts", s["open_conflicts"]),
        ("cached", f"{s['cached_items']} files, {size_text(s['cached_bytes'])}" +
                   (f" of {size_text(s['cache_quota_bytes'])} allowed"
                    if s.get("cache_quota_bytes") else "")),
        ("available offline", _offline_line(s.get("available_offline"))),
        ("cache disk", f"FULL: {size_text(s['pending_upload_bytes'])} of changes wait for upload; "
                       f"delete files or make room in the data dir"
         if s.get("cache_disk_full") else "room left"),
        ("last upload", f"{_when(last['at'])} {last['path']}" if last else "none yet"),
        ("last sync", _when(s["last_sync"]) if s["last_sync"] else "none yet"),
        ("next sync", (_when(s["next_background_sync"]) + " (background, when not online)")
         if s["next_background_sync"] else "not planned"),
        ("data dir", s["data_dir"]),
    ]
    for key, value in rows:
        click.echo(f"{key + ':':19}{value}")
    return 0


@cli.command()
@click.argument("mountpoint")
def check(mountpoint):
    """Check that the cache's database and content files agree (exit 1 on a fault)."""
    faults = _ask(mountpoint, {"cmd": "check"}, timeout=300)["faults"]
    for fault in faults:
        click.echo(fault)
    if faults:
        click.echo(f"{len(faults)} faults found", err=True)
        return 1
    click.echo("cache is consistent")
    return 0


@cli.command()
@click.option("--dir", "base", default="~/cscfs-demo", show_default=True,
              help="where the demo server folder and mount point go")
def demo(base):
    """Mount a demo share (a local folder with a few files) and say what to try."""
    from .demo import run_demo

    return run_demo(os.path.expanduser(base))


@cli.command()
@click.argument("mountpoint")
def offline(mountpoint):
    """Work offline: serve everything from the cache until `cscfs online`, also
    across restarts."""
    answer = _ask(mountpoint, {"cmd": "offline"})
    click.echo(f"{answer['mode']} ({answer['reason']})")
    return 0


@cli.command()
@click.argument("mountpoint")
def online(mountpoint):
    """End work-offline: go online as soon as the link allows."""
    answer = _ask(mountpoint, {"cmd": "online"})
    click.echo(f"{answer['mode']} ({answer['reason']})")
    return 0


@cli.command()
@click.argument("mountpoint")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--limit", default=200, show_default=True, help="how many of the latest")
def events(mountpoint, as_json, limit):
    """List what happened: mode changes with their reasons."""
    rows = _ask(mountpoint, {"cmd": "events", "limit": limit})["events"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return 0
    for e in rows:
        rtt = "" if e["rtt_ms"] is None else f" [median RTT {e['rtt_ms']:.1f} ms]"
        click.echo(f"{_when(e['at'])}  {e['kind']:5} {e['mode'] or '':15} {e['reason']}{rtt}")
    return 0


def _locate(path: str) -> tuple[str, str]:
    """(mount point, path inside it) for a path in a cscfs mount."""
    from .mounts import fuse_mounts

    full = os.path.abspath(os.path.expanduser(path))
    ours = [m for m, mount in fuse_mounts().items() if mount.fstype == "fuse.cscfs"]
    for mp in sorted(ours, key=len, reverse=True):
        if full == mp or full.startswith(mp.rstrip("/") + "/"):
            return mp, full[len(mp):].strip("/")
    raise UserError(f"{path} is not inside a cscfs mount")


@cli.command()
@click.argument("mountpoint")
@click.argument("paths", nargs=-1)
def sync(mountpoint, paths):
    """Sync now: replay offline changes, upload, fetch pinned files. Works in every
    mode that can reach the server. Exit 0: in sync; 3: conflicts are open."""
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress,
                               TextColumn, TimeRemainingColumn)

    mp = os.path.abspath(os.path.expanduser(mountpoint))
    rel = [_locate(os.path.join(mp, p) if not os.path.isabs(p) else p)[1] for p in paths]
    summary = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("files"), DownloadColumn(), TimeRemainingColumn(),
                  transient=True, disable=not sys.stderr.isatty()) as bar:
        files = bar.add_task("sync", total=None)
        data = bar.add_task("bytes", total=None, visible=False)

        def on_progress(p):
            if "summary" in p:
                summary.update(p["summary"])
                return
            bar.update(files, total=p["total_files"], completed=p["done_files"],
                       description=p.get("path", "sync")[-40:])
            bar.update(data, total=p["total_bytes"], completed=p["done_bytes"])

        _ask(mp, {"cmd": "sync", "paths": rel}, timeout=None, on_progress=on_progress)
    s = summary
    click.echo(f"synced: {s['replayed']} offline changes replayed, {s['uploaded']} uploaded, "
               f"{s['downloaded']} downloaded ({size_text(s['bytes'])}), {s['failed']} failed, "
               f"{s['new_conflicts']} new conflicts, {s['open_conflicts']} open, "
               f"in {s['seconds']:.1f} s")
    if s.get("costed"):
        click.echo(f"note: the link is costed ({s['costed']}); background sync is paused")
    if s["failed"]:
        return 1
    return 3 if s["open_conflicts"] else 0


@cli.command()
@click.argument("mountpoint")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def conflicts(mountpoint, as_json):
    """List open conflicts: both versions are kept until you resolve them."""
    rows = _ask(mountpoint, {"cmd": "conflicts"})["conflicts"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return 0
    if not rows:
        click.echo("no open conflicts")
    for r in rows:
        other = f" -> our version at {r['copy_path']}" if r["copy_path"] else ""
        click.echo(f"{_when(r['detected_at'])}  {r['kind']:14} {r['path']}{other}")
    return 0


@cli.command()
@click.argument("path")
@click.option("--keep", type=click.Choice(["local", "server", "both", "latest"]), required=True,
              help="which version stays: ours, the server's, both, or the newer one")
def resolve(path, keep):
    """Settle the conflict at PATH (the file or its conflict copy, in the mount)."""
    mp, rel = _locate(path)
    answer = _ask(mp, {"cmd": "resolve", "path": rel, "keep": keep})
    click.echo(f"resolved {answer['kind']} conflict at {answer['path']}: kept {answer['kept']}")
    return 0


@cli.command()
@click.argument("paths", nargs=-1, required=True)
def pin(paths):
    """Keep PATHS fully cached (fetched in the background, never evicted)."""
    return _pin(paths, "pin")


@cli.command()
@click.argument("paths", nargs=-1, required=True)
def unpin(paths):
    """Let PATHS be cached on demand only (the whole mount is pinned by default)."""
    return _pin(paths, "unpin")


def _pin(paths, cmd) -> int:
    by_mount: dict[str, list[str]] = {}
    for p in paths:
        mp, rel = _locate(p)
        by_mount.setdefault(mp, []).append(rel)
    for mp, rels in by_mount.items():
        answer = _ask(mp, {"cmd": cmd, "paths": rels})
        click.echo(f"{cmd}ned {len(rels)} paths in {mp}" +
                   (f"; fetching {answer['queued']} files" if answer["queued"] else ""))
    return 0


def _failures(rows: list[dict]) -> str:
    """Files whose upload fails, one line each under the count."""
    if not rows:
        return "none"
    lines = [f"{len(rows)} (retried later, less and less often)"]
    lines += [f"  {r['path']}: {r['reason']} (since {_when(r['since'])})" for r in rows]
    return "\n".join(lines)


@cli.command()
@click.argument("folder", required=False)
@click.argument("server", required=False)
@click.option("--credentials", "credentials_file", metavar="FILE",
              help="SMB: a cifs-style credentials file, readable by you only (its path is "
                   "kept for the login mount; the password stays in it)")
@click.option("--no-move", is_flag=True,
              help="leave the folder's present contents aside in a folder next to it "
                   "instead of moving them to the server")
@click.option("--removal-policy", type=click.Choice(["leave", "move-back"]), default="leave",
              show_default=True, help="what a computer that is not primary does with it")
@click.option("--remove", is_flag=True, help="stop redirecting FOLDER (with --move-back "
              "or --leave)")
@click.option("--move-back", is_flag=True, help="with --remove: copy the files back here")
@click.option("--leave", is_flag=True, help="with --remove: leave the files on the server")
@click.option("--force", is_flag=True, help="with --remove: even when pending changes "
              "cannot reach the server (they stay in the cache for a later mount)")
@click.option("--list", "as_list", is_flag=True, help="list the redirected folders")
@click.option("--json", "as_json", is_flag=True, help="with --list: machine-readable")
@click.option("--login", is_flag=True, hidden=True)
@click.option("--logout", is_flag=True, hidden=True)
def redirect(folder, server, credentials_file, no_move, removal_policy, remove, move_back,
             leave, force, as_list, as_json, login, logout):
    """Redirect an XDG user folder (documents, desktop, pictures, music, videos,
    download, templates, publicshare) to SERVER: its files move to the server and
    cscfs mounts it at the same path, available offline, at every login.

    \b
    cscfs redirect FOLDER SERVER [--credentials FILE] [--no-move]
    cscfs redirect --remove FOLDER --move-back | --leave [--force]
    cscfs redirect --list [--json]
    """
    from .redirect import flows

    modes_given = sum(map(bool, (remove, as_list, login, logout)))
    if modes_given > 1:
        raise UserError("give one of --remove, --list")
    if as_list:
        if folder or server:
            raise UserError("--list takes no FOLDER or SERVER")
        return _redirect_list(flows.listing(), as_json)
    if not folder:
        raise UserError("give FOLDER (e.g. documents)")
    if login or logout:
        return flows.login(folder) if login else flows.logout(folder)
    if remove:
        if move_back == leave or server:
            raise UserError("--remove FOLDER takes one of --move-back, --leave (and no SERVER)")
        return flows.remove(folder, "move-back" if move_back else "leave", force, click.echo)
    if move_back or leave or force:
        raise UserError("--move-back, --leave and --force go with --remove")
    if not server:
        raise UserError("give SERVER (smb://USER@HOST/SHARE[/PATH] or a folder)")
    return flows.redirect(folder, server, credentials_file, no_move, removal_policy, click.echo)


def _redirect_list(rows: list[dict], as_json: bool) -> int:
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return 0
    if not rows:
        click.echo("no folder is redirected")
    for r in rows:
        pending = ("" if r["pending_uploads"] is None else
                   f", {r['pending_uploads']} pending uploads, "
                   f"{r['pending_changes']} offline changes")
        mode = r["mode"] or "not mounted"
        click.echo(f"{r['folder']:12} {r['path']} -> {r['server']}  [unit: {r['unit']}; "
                   f"{mode}{pending}]" + ("" if r["state"] == "redirected"
                                           else " (move unfinished)"))
    return 0


def _offline_line(p: dict | None) -> str:
    """How much of the pinned set is available offline, and what the filler does."""
    if not p:
        return "unknown"
    line = (f"{p['files_done']} of {p['files_total']} pinned files, "
            f"{size_text(p['bytes_done'])} of {size_text(p['bytes_total'])}")
    doing = p["activity"] + (f"; waiting: {p['waiting_for']}" if p["waiting_for"] else "")
    if p["over_quota"]:
        doing += "; the pinned files do not all fit the cache quota"
    return f"{line} ({doing})"


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))




def _add_roam() -> None:
    from .roam.cli import roam

    cli.add_command(roam)


_add_roam()


def main(argv: list[str] | None = None) -> int:
    try:
        result = cli.main(args=argv, prog_name="cscfs", standalone_mode=False)
    except getattr(click.exceptions, "NoArgsIsHelpError", ()) as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return 0
    except click.UsageError as exc:
        hint = f" (see 'cscfs {exc.ctx.info_name} --help')" if exc.ctx and exc.ctx.parent else ""
        click.echo(f"cscfs: error: {exc.format_message()}{hint}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"cscfs: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except click.Abort:
        return 130
    except CscfsError as exc:
        click.echo(f"cscfs: error: {exc}", err=True)
        return exc.exit_code
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
