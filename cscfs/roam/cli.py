"""`cscfs roam ...`: the roaming commands (click), glued to flows.py."""

from __future__ import annotations

import json
import time

import click

from ..errors import CscfsError, UserError
from ..textfmt import size_text


def _when(at) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else "never"


def _done(fact) -> str:
    if not fact:
        return "never"
    return f"{_when(fact['at'])}: {fact['outcome']}" + (
        f" ({fact['detail']})" if fact.get("detail") else "")


def _report(outcome) -> int:
    for line in outcome.lines:
        click.echo(line)
    if not outcome.ok:
        raise CscfsError(outcome.lines[-1] if outcome.lines else "failed")
    return 0


@click.group()
def roam() -> None:
    """Roam your settings (the dconf database, ~/.config and data sets) through a
    profile server: down at logon, up at logoff and in the background."""


@roam.command()
@click.argument("server")
@click.option("--credentials", "credentials_file", metavar="FILE",
              help="SMB: a cifs-style credentials file, readable by you only")
@click.option("--group", "machine_group", metavar="NAME",
              help="this computer's group, for data sets of scope 'group'")
def setup(server, credentials_file, machine_group):
    """Roam to SERVER (smb://USER@HOST/SHARE[/PATH] or a folder); the profile is
    SERVER/<user>/. Installs the user unit that runs the roaming agent."""
    from .flows import setup as do_setup

    return do_setup(server, credentials_file, machine_group, click.echo)


def _roamer():
    from .flows import Roamer

    return Roamer()


@roam.command()
@click.option("--anyway", is_flag=True, help="also on a slow or costed link")
def upload(anyway):
    """Run one background upload of the hive now (client to server only)."""
    r = _roamer()
    try:
        return _report(r.upload(anyway=anyway))
    finally:
        r.close()


@roam.command()
def logon():
    """Bring the profile down where the server's copy is newer (the agent does this
    at every login)."""
    r = _roamer()
    try:
        return _report(r.logon())
    finally:
        r.close()


@roam.command()
def logoff():
    """Take the profile up (the agent does this at the end of every session)."""
    r = _roamer()
    try:
        return _report(r.logoff())
    finally:
        r.close()


@roam.command(hidden=True)
def agent():
    """The user unit's main process."""
    from .agent import run_agent

    return run_agent()


@roam.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status(as_json):
    """The profile server, the last and next background upload, the last logon and
    logoff, the data sets."""
    r = _roamer()
    try:
        s = r.status()
    finally:
        r.close()
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return 0
    rows = [("profile", s["profile"]), ("schedule", s["schedule"]),
            ("last upload", _done(s["last_upload"])),
            ("next upload", _when(s["next_upload"]) if s["next_upload"]
             else "when the agent runs"),
            ("last logon", _done(s["last_logon"])), ("last logoff", _done(s["last_logoff"])),
            ("machine group", s["machine_group"] or "none"),
            ("user SID", f"{s['sid']} ({s['sid_source']})")]
    for key, value in rows:
        click.echo(f"{key + ':':15}{value}")
    if not s["datasets"]:
        click.echo(f"{'data sets:':15}none")
    for name, ds in s["datasets"].items():
        paths = ", ".join(ds["dconf"] + ds["folders"])
        click.echo(f"{'data set:':15}{name} ({ds['scope']}): {paths}")
    for name, size in s["dataset_files"].items():
        click.echo(f"{'  exported:':15}{name} {size_text(size)}")
    return 0


@roam.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--limit", default=200, show_default=True, help="how many of the latest")
def events(as_json, limit):
    """What roaming did, by the Windows events' names."""
    from .state import RoamState

    state = RoamState()
    try:
        rows = state.events(limit)
    finally:
        state.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return 0
    for e in rows:
        click.echo(f"{_when(e['at'])}  {e['name']}" + (f": {e['detail']}" if e["detail"] else ""))
    return 0


@roam.group()
def dataset() -> None:
    """Data sets: dconf paths and folders roamed to every computer (global) or to
    the computers of this one's group (group)."""


@dataset.command("add")
@click.argument("name")
@click.option("--scope", type=click.Choice(["global", "group"]), default="global",
              show_default=True)
@click.option("--dconf", "dconf_paths", multiple=True, metavar="PATH",
              help="a dconf folder (/org/gnome/desktop/background/) or key; repeatable")
@click.option("--folder", "folders", multiple=True, metavar="DIR",
              help="a folder in your home; repeatable")
def dataset_add(name, scope, dconf_paths, folders):
    """Add (or replace) data set NAME."""
    from .flows import add_dataset

    return add_dataset(name, scope, list(dconf_paths), list(folders), click.echo)


@dataset.command("remove")
@click.argument("name")
def dataset_remove(name):
    """Stop roaming data set NAME (its file on the server stays)."""
    from . import settings

    cfg = settings.load()
    if name not in cfg.datasets:
        raise UserError(f"no data set {name!r} (see cscfs roam status)")
    del cfg.datasets[name]
    settings.save(cfg)
    click.echo(f"data set {name} removed")
    return 0
