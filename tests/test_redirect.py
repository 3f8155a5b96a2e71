"""Folder Redirection against a real Samba share and real FUSE mounts, in a
temporary HOME: `cscfs redirect documents smb://...` moves the files to the server
and mounts the folder at the same path; its login unit; removal; bad input."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cscfs.mounts import fuse_mounts

from . import usermanager
from .conftest import FAST, IN_CI, cscfs, require_fuse, wait_for

MACHINE = "0123456789abcdef0123456789abcdef"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root."""
    return {str(p.relative_to(root)): digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


class Home:
    def __init__(self, base: Path, share):
        self.base, self.share = base, share
        self.home = base / "home"
        self.docs = self.home / "Documents"
        self.config = self.home / ".config"
        self.runtime = tempfile.mkdtemp(prefix="cs-")  # short: socket paths
        self.env = {"HOME": str(self.home), "XDG_CONFIG_HOME": str(self.config),
                    "XDG_DATA_HOME": str(self.home / ".local" / "share"),
                    "XDG_RUNTIME_DIR": self.runtime,
                    "CSCFS_MACHINE_ID_FILE": str(base / "machine-id")}
        (base / "machine-id").write_text(MACHINE + "\n")
        (self.config / "cscfs").mkdir(parents=True)
        self.write_config("")

    def write_config(self, extra: str, write_back_delay: float = FAST.write_back_delay) -> None:
        (self.config / "cscfs" / "config.toml").write_text(
            f"attr_ttl = {FAST.attr_ttl}\nprobe_interval = {FAST.probe_interval}\n"
            f"remote_timeout = {FAST.remote_timeout}\n"
            f"write_back_delay = {write_back_delay}\n{extra}")

    def fill(self) -> dict[str, str]:
        """A Documents folder with files and subfolders; one name the share has too."""
        (self.docs / "letters" / "2026").mkdir(parents=True)
        (self.docs / "docs").mkdir()
        (self.docs / "notes.txt").write_text("my notes\n")
        (self.docs / "letters" / "2026" / "bank.odt").write_bytes(os.urandom(3 << 20))
        (self.docs / "letters" / "empty").write_bytes(b"")
        (self.docs / "docs" / "report.txt").write_text("my own report\n")  # the share has one
        return tree(self.docs)

    def unit_file(self) -> Path:
        return self.config / "systemd" / "user" / "cscfs-redirect-documents.service"

    def unit_command(self, key: str) -> list[str]:
        for line in self.unit_file().read_text().splitlines():
            if line.startswith(key + "="):
                return shlex.split(line.split("=", 1)[1])
        raise AssertionError(f"no {key} in the unit")

    def redirect(self, *args: str) -> subprocess.CompletedProcess:
        return cscfs("redirect", *args, check=False)

    def redirect_documents(self) -> subprocess.CompletedProcess:
        proc = self.redirect("documents", self.share.url, "--credentials",
                             str(self.share.credentials))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def mounted(self) -> bool:
        return str(self.docs) in fuse_mounts()

    def status(self) -> dict:
        return json.loads(cscfs("status", str(self.docs), "--json").stdout)

    def wait_available_offline(self) -> None:
        wait_for(lambda: self.status()["available_offline"]["activity"] == "complete", 60,
                 what="every file available offline")

    def registry(self) -> str | None:
        path = self.config / "cscfs" / "redirect.toml"
        return path.read_text() if path.exists() else None

    def run_unit(self, key: str) -> subprocess.CompletedProcess:
        """The unit's ExecStart or ExecStop, run to its end as the user manager would."""
        return subprocess.run(self.unit_command(key), capture_output=True, text=True,
                              timeout=180)

    def cleanup(self) -> None:
        if self.mounted():
            cscfs("unmount", str(self.docs), "--force", check=False)
        if self.mounted():
            subprocess.run(["fusermount3", "-u", "-z", str(self.docs)], check=False)
        shutil.rmtree(self.runtime, ignore_errors=True)


@pytest.fixture
def home(tmp_path, smb_share, monkeypatch):
    require_fuse()
    h = Home(tmp_path, smb_share)
    for key, value in h.env.items():
        monkeypatch.setenv(key, value)
    h.docs.mkdir(parents=True)
    try:
        yield h
    finally:
        h.cleanup()


def test_documents_are_moved_to_the_server_and_mounted_at_the_same_path(home):
    before = home.fill()
    server_report = home.share.root / "docs" / "report.txt"
    theirs = digest(server_report)
    out = home.redirect_documents().stdout
    assert "verified by hash on the server" in out
    assert "conflict: docs/report.txt" in out
    assert home.mounted()
    on_server = tree(home.share.root)
    for rel, h in before.items():
        if rel == "docs/report.txt":  # both kept: theirs at the name, ours beside it
            assert on_server[rel] == theirs
            copy = [r for r in on_server if r.startswith("docs/report (conflict ")]
            assert len(copy) == 1 and on_server[copy[0]] == h
        else:
            assert on_server[rel] == h, rel
        assert digest(home.docs / rel) == on_server[rel]  # the same path, through the mount
    conflicts = json.loads(cscfs("conflicts", str(home.docs), "--json").stdout)
    assert [c["path"] for c in conflicts] == ["docs/report.txt"]
    xdg = subprocess.run(["xdg-user-dir", "DOCUMENTS"], capture_output=True, text=True)
    assert xdg.stdout.strip() == str(home.docs)
    listed = json.loads(cscfs("redirect", "--list", "--json").stdout)
    assert [(r["folder"], r["server"], r["mounted"]) for r in listed] == [
        ("documents", home.share.url, True)]
    assert listed[0]["mode"] == "online" and listed[0]["pending_uploads"] == 0
    status = json.loads(cscfs("status", str(home.docs), "--json").stdout)
    wait_for(lambda: json.loads(cscfs("status", str(home.docs), "--json").stdout)
             ["available_offline"]["activity"] == "complete", 30, what="the fill")
    assert status["server"] == home.share.url
    # the password stays in its file: the registry keeps only where that file is
    registry = (home.config / "cscfs" / "redirect.toml").read_text()
    assert "password" not in registry and str(home.share.credentials) in registry


def test_the_login_unit_is_valid(home):
    home.redirect_documents()
    if shutil.which("systemd-analyze") is None:
        if IN_CI:
            pytest.fail("systemd-analyze is required in CI (apt-get install systemd)")
        pytest.skip("systemd-analyze is missing")
    proc = subprocess.run(["systemd-analyze", "--user", "verify", str(home.unit_file())],
                          capture_output=True, text=True)
    problems = [line for line in proc.stderr.splitlines() if home.unit_file().name in line]
    assert proc.returncode == 0 and problems == [], proc.stderr
    text = home.unit_file().read_text()
    assert "Type=notify" in text and "Restart=on-failure" in text
    assert "network-online" not in text.replace("# No network-online.target", "")


def test_execstart_is_ready_only_once_the_mount_answers_and_moves_strays_in(home, tmp_path):
    home.fill()
    home.redirect_documents()
    stop = subprocess.run(home.unit_command("ExecStop"), capture_output=True, text=True,
                          timeout=120)
    assert stop.returncode == 0 and not home.mounted(), stop.stderr
    assert home.docs.is_dir() and list(home.docs.iterdir()) == []  # kept for xdg-user-dirs
    (home.docs / "early.txt").write_text("saved while not mounted\n")  # an app too early

    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(60)
    proc = subprocess.Popen(home.unit_command("ExecStart"),
                            env=dict(os.environ, NOTIFY_SOCKET=address))
    try:
        first = sock.recv(4096).decode().splitlines()
        assert "READY=1" in first
        assert home.mounted()  # it answers: the listing comes from the mount
        assert "notes.txt" in os.listdir(home.docs)
        assert any(line.startswith("STATUS=online; ") for line in first)
        status = []
        while not any("available offline" in s for s in status) or len(status) < 2:
            status += sock.recv(4096).decode().splitlines()
        assert all(s.startswith("STATUS=") for s in status)
        wait_for(lambda: (home.share.root / "early.txt").exists(), 20, what="the stray upload")
        assert (home.docs / "early.txt").read_text() == "saved while not mounted\n"
        events = json.loads(cscfs("events", str(home.docs), "--json").stdout)
        assert any(e["kind"] == "redirect" and "while it was not mounted" in e["reason"]
                   for e in events)
        stop = subprocess.run(home.unit_command("ExecStop"), capture_output=True, text=True,
                              timeout=120)
        assert stop.returncode == 0, stop.stderr
        # ExecStop returns once the daemon is gone and its data dir is free
        assert proc.poll() == 0
        data_dir = Path(home.env["XDG_DATA_HOME"]) / "cscfs"
        lock = next(data_dir.glob("*/lock"))
        with open(lock) as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert not home.mounted()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        sock.close()


def test_a_move_cut_by_kill_9_resumes_and_loses_nothing(home):
    for i in range(300):
        sub = home.docs / f"folder{i % 7}"
        sub.mkdir(exist_ok=True)
        (sub / f"file{i}.bin").write_bytes(os.urandom(4096 + i))
    before = tree(home.docs)
    argv = [sys.executable, "-m", "cscfs", "redirect", "documents", home.share.url,
            "--credentials", str(home.share.credentials)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journals = Path(home.env["XDG_DATA_HOME"]) / "cscfs"

    def moved_some() -> bool:
        found = list(journals.glob("*/move-journal.jsonl"))
        return bool(found) and found[0].read_text().count('"done"') >= 30

    try:
        wait_for(moved_some, 60, interval=0.005, what="a move under way")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert not home.mounted()
    left = tree(home.docs)
    assert 0 < len(left) < len(before)
    on_server = tree(home.share.root)
    for rel, h in before.items():  # every file is here or on the server, intact
        assert left.get(rel) == h or on_server.get(rel) == h, rel

    out = home.redirect_documents().stdout
    assert "resuming the unfinished move" in out
    on_server = tree(home.share.root)
    assert all(on_server[rel] == h for rel, h in before.items())
    assert not any("conflict" in rel for rel in on_server)
    assert tree(home.docs) == {**before, "hello.txt": on_server["hello.txt"],
                               "docs/report.txt": on_server["docs/report.txt"]}


def test_remove_move_back_puts_every_file_back_here(home):
    before = home.fill()
    home.redirect_documents()
    (home.docs / "letters" / "written-in-the-mount.txt").write_text("new\n")
    out = home.redirect("--remove", "documents", "--move-back")
    assert out.returncode == 0, out.stderr
    assert "no longer redirected" in out.stdout
    assert not home.mounted() and not home.unit_file().exists()
    here = tree(home.docs)
    assert here["letters/written-in-the-mount.txt"] == digest(
        home.share.root / "letters" / "written-in-the-mount.txt")
    assert all(rel in here for rel in before)
    assert here["letters/2026/bank.odt"] == before["letters/2026/bank.odt"]
    assert json.loads(cscfs("redirect", "--list", "--json").stdout) == []
    assert subprocess.run(["xdg-user-dir", "DOCUMENTS"], capture_output=True,
                          text=True).stdout.strip() == str(home.docs)


def test_remove_leave_leaves_the_files_on_the_server(home):
    before = home.fill()
    home.redirect_documents()
    (home.docs / "late.txt").write_text("written just before\n")
    out = home.redirect("--remove", "documents", "--leave")
    assert out.returncode == 0, out.stderr
    assert not home.mounted() and not home.unit_file().exists()
    assert home.docs.is_dir() and list(home.docs.iterdir()) == []
    on_server = tree(home.share.root)
    assert on_server["late.txt"] == hashlib.sha256(b"written just before\n").hexdigest()
    assert on_server["letters/2026/bank.odt"] == before["letters/2026/bank.odt"]


def test_a_computer_that_is_not_primary_refuses(home):
    before = home.fill()
    home.write_config(f'primary_computers_only = true\nprimary_computers = ["{MACHINE}"]\n')
    (home.share.root / ".cscfs").mkdir()
    (home.share.root / ".cscfs" / "primary-computers").write_text(
        "# the office desktops\nffffffffffffffffffffffffffffffff\n")
    out = home.redirect("documents", home.share.url, "--credentials", str(home.share.credentials))
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "not a primary computer" in out.stderr
    assert "server's .cscfs/primary-computers" in out.stderr  # the server's copy wins
    assert tree(home.docs) == before and not home.mounted()
    assert not (home.share.root / "notes.txt").exists()
    (home.share.root / ".cscfs" / "primary-computers").write_text(MACHINE + "\n")
    home.redirect_documents()
    assert home.mounted()
    # No longer primary: at the next login the unit does not mount and applies the
    # folder's removal policy (leave: the files stay on the server, the unit goes).
    subprocess.run(home.unit_command("ExecStop"), check=True, timeout=120)
    (home.share.root / ".cscfs" / "primary-computers").write_text("ffff\n")
    login = subprocess.run(home.unit_command("ExecStart"), capture_output=True, text=True,
                           timeout=120)
    assert login.returncode == 0 and "not a primary computer" in login.stderr
    assert not home.mounted() and not home.unit_file().exists()
    assert home.docs.is_dir() and list(home.docs.iterdir()) == []
    assert tree(home.share.root)["notes.txt"] == before["notes.txt"]
    assert json.loads(cscfs("redirect", "--list", "--json").stdout) == []


@pytest.mark.parametrize("case", ["unknown folder", "already redirected", "unreachable",
                                  "credentials readable by others"])
def test_bad_input_is_one_line_and_changes_nothing(home, case):
    before = home.fill()
    args = ["documents", home.share.url, "--credentials", str(home.share.credentials)]
    want = 2
    if case == "unknown folder":
        args[0] = "Documnets"
    elif case == "already redirected":
        home.redirect_documents()
        before = tree(home.docs)
    elif case == "unreachable":
        args[1] = f"smb://{home.share.rig.user}@127.0.0.1:1/share"
        want = 1
    else:
        cred = home.base / "cred"
        shutil.copy(home.share.credentials, cred)
        cred.chmod(0o644)
        args[3] = str(cred)
    registry = home.config / "cscfs" / "redirect.toml"
    registry_before = registry.read_text() if registry.exists() else None
    server_before = tree(home.share.root)
    out = home.redirect(*args)
    assert out.returncode == want, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("cscfs: error: ")
    assert tree(home.docs) == before
    assert tree(home.share.root) == server_before
    assert (registry.read_text() if registry.exists() else None) == registry_before


def test_no_move_leaves_the_contents_aside_and_says_where(home):
    before = home.fill()
    server_before = tree(home.share.root)
    out = home.redirect("documents", home.share.url, "--credentials",
                        str(home.share.credentials), "--no-move")
    assert out.returncode == 0, out.stdout + out.stderr
    aside = home.home / "Documents.before-redirect"
    assert f"left the contents of {home.docs} in {aside}" in out.stdout
    assert tree(aside) == before  # nothing lost, nothing moved
    assert tree(home.share.root) == server_before
    assert home.mounted()  # the mount shows the server's files only
    assert tree(home.docs) == server_before
    assert subprocess.run(["xdg-user-dir", "DOCUMENTS"], capture_output=True,
                          text=True).stdout.strip() == str(home.docs)
    # once more after a removal: the first folder aside is not overwritten
    home.redirect("--remove", "documents", "--leave")
    (home.docs / "second.txt").write_text("made later\n")
    out = home.redirect("documents", home.share.url, "--credentials",
                        str(home.share.credentials), "--no-move")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"in {aside}-2" in out.stdout
    assert tree(aside) == before
    assert (home.home / "Documents.before-redirect-2" / "second.txt").read_text() == "made later\n"


def _unit_and_state(home) -> tuple:
    return (home.registry(), home.unit_file().exists(), home.mounted())


@pytest.mark.parametrize("how", ["leave", "move-back"])
def test_removal_with_the_server_unreachable_refuses_and_force_keeps_the_changes(home, how):
    """The link to Samba is cut (packets dropped): pending changes cannot be uploaded.
    The removal refuses with one line and changes nothing; --force stops the
    redirection and keeps the changes in the cache; a later mount uploads them."""
    rig = home.share.rig
    before = home.fill()
    home.redirect_documents()
    home.wait_available_offline()
    rig.cut()
    wait_for(lambda: home.status()["mode"] == "offline", 30, what="offline after the cut")
    (home.docs / "offline.txt").write_text("written with the server unreachable\n")
    with open(home.docs / "notes.txt", "a") as f:
        f.write("an offline edit\n")
    wait_for(lambda: home.status()["pending_uploads"] == 2, 10, what="two pending uploads")
    state = _unit_and_state(home)

    out = home.redirect("--remove", "documents", f"--{how}")
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("cscfs: error: ")
    assert "unreachable" in out.stderr and "--force" in out.stderr and "2 changes" in out.stderr
    assert _unit_and_state(home) == state and home.status()["pending_uploads"] == 2
    assert (home.docs / "offline.txt").read_text() == "written with the server unreachable\n"

    # not mounted (logged out with the changes pending): refused the same, still unmounted
    stop = home.run_unit("ExecStop")
    assert stop.returncode == 0 and "2 changes not uploaded yet" in stop.stdout, stop.stderr
    state = _unit_and_state(home)
    out = home.redirect("--remove", "documents", f"--{how}")
    assert out.returncode == 1 and "2 changes" in out.stderr, out.stdout + out.stderr
    assert _unit_and_state(home) == state and not home.mounted()

    out = home.redirect("--remove", "documents", f"--{how}", "--force")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 changes not uploaded kept in the cache" in out.stdout
    assert not home.mounted() and not home.unit_file().exists()
    assert json.loads(cscfs("redirect", "--list", "--json").stdout) == []
    data_dirs = list((Path(home.env["XDG_DATA_HOME"]) / "cscfs").glob("*/state.db"))
    assert len(data_dirs) == 1  # the cache is kept
    assert not (home.share.root / "offline.txt").exists()
    if how == "move-back":  # copied back from the cache, the offline changes included
        here = tree(home.docs)
        assert here["offline.txt"] == digest_of("written with the server unreachable\n")
        assert (home.docs / "notes.txt").read_text() == "my notes\nan offline edit\n"
        assert here["letters/2026/bank.odt"] == before["letters/2026/bank.odt"]
        return
    assert list(home.docs.iterdir()) == []

    # The server is back; the folder mounted again from it: the kept changes upload.
    rig.restore()
    home.redirect_documents()
    wait_for(lambda: (home.share.root / "offline.txt").exists()
             and home.status()["pending_uploads"] == 0, 60, what="the kept changes uploaded")
    assert (home.share.root / "offline.txt").read_text() == "written with the server unreachable\n"
    assert (home.share.root / "notes.txt").read_text() == "my notes\nan offline edit\n"


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_computer_no_longer_primary_moves_the_files_back_at_login(home):
    """removal policy move-back: at the next login the unit does not mount and copies
    everything back here, also what was written through the mount; the server's
    own .cscfs folder stays there."""
    home.fill()
    home.write_config("primary_computers_only = true\n")
    (home.share.root / ".cscfs").mkdir()
    (home.share.root / ".cscfs" / "primary-computers").write_text(MACHINE + "\n")
    out = home.redirect("documents", home.share.url, "--credentials",
                        str(home.share.credentials), "--removal-policy", "move-back")
    assert out.returncode == 0, out.stdout + out.stderr
    (home.docs / "letters" / "from-the-mount.txt").write_text("written redirected\n")
    stop = home.run_unit("ExecStop")
    assert stop.returncode == 0 and not home.mounted(), stop.stderr
    (home.share.root / ".cscfs" / "primary-computers").write_text("ffff  # the new desktop\n")
    on_server = tree(home.share.root)
    assert "letters/from-the-mount.txt" in on_server
    logout = home.unit_command("ExecStop")
    login = home.run_unit("ExecStart")
    assert login.returncode == 0, login.stderr
    first = login.stderr.splitlines()[0]
    assert "not a primary computer" in first and "move-back" in first
    assert not home.mounted() and not home.unit_file().exists()
    here = tree(home.docs)
    assert here == {rel: h for rel, h in on_server.items() if not rel.startswith(".cscfs/")}
    assert tree(home.share.root) == on_server  # left on the server too
    assert json.loads(cscfs("redirect", "--list", "--json").stdout) == []
    # ExecStop, which systemd runs after it, has nothing to do and does not fail
    stop = subprocess.run(logout, capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0 and "not redirected" in stop.stdout, stop.stderr


def test_a_primary_computer_that_starts_offline_stays_redirected(home):
    """Only the server's list names this computer; at a login without the server the
    list as last read decides, so the folder is mounted from the cache."""
    home.fill()
    home.write_config("primary_computers_only = true\n")
    (home.share.root / ".cscfs").mkdir()
    (home.share.root / ".cscfs" / "primary-computers").write_text(MACHINE + "\n")
    home.redirect_documents()
    home.wait_available_offline()
    assert home.run_unit("ExecStop").returncode == 0
    home.share.rig.cut()
    proc = subprocess.Popen(home.unit_command("ExecStart"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(home.mounted, 60, what="the login mount")
        assert home.status()["mode"] == "offline"
        assert (home.docs / "notes.txt").read_text() == "my notes\n"
        assert home.unit_file().exists() and "documents" in home.registry()
        stop = home.run_unit("ExecStop")
        assert stop.returncode == 0, stop.stderr
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        err = proc.stderr.read()
        print(err)
    assert "not a primary computer" not in err


# ------------------------------------------------------------ under a real user manager
UNIT = "cscfs-redirect-documents.service"


@pytest.fixture
def user_manager(home):
    reason = usermanager.missing()
    if reason:
        if IN_CI:
            pytest.fail(f"a systemd user manager is required in CI: {reason}")
        pytest.skip(reason)
    manager = usermanager.UserManager(home.base, {**home.env, "PATH": os.environ["PATH"]},
                                      home.base / "user-manager.log")
    try:
        manager.start()
        yield manager
    finally:
        manager.stop()


def test_the_login_unit_under_a_real_user_manager(home, user_manager):
    """systemctl --user start / status / stop / restart, as at login and logout."""
    m = user_manager
    home.write_config("", write_back_delay=60)  # a change stays pending until the stop
    home.fill()
    out = home.redirect_documents().stdout
    assert f"mounted at every login by {UNIT}" in out
    assert m.systemctl("is-enabled", UNIT).stdout.strip() == "enabled"
    assert home.mounted() and (home.docs / "notes.txt").read_text() == "my notes\n"
    home.wait_available_offline()
    status = m.systemctl("status", UNIT).stdout
    assert "active (running)" in status
    assert 'Status: "online; 0 pending uploads; available offline' in status, status

    # Active only once READY=1 came, which the daemon sends once the mount answers.
    m.systemctl("stop", UNIT, check=True)
    assert not home.mounted()
    m.systemctl("start", "--no-block", UNIT, check=True)
    seen = []
    while True:
        state = m.show(UNIT, "ActiveState")["ActiveState"]
        if state == "active":
            assert home.mounted() and "notes.txt" in os.listdir(home.docs)
            break
        assert state == "activating", (state, m.systemctl("status", UNIT).stdout)
        seen.append(state)
    assert seen, "never seen activating"
    times = m.show(UNIT, "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
    assert int(times["ActiveEnterTimestampMonotonic"]) > int(
        times["ExecMainStartTimestampMonotonic"])

    # stop = logout: the pending change is uploaded before the unmount
    (home.docs / "at-logout.txt").write_text("saved just before logging out\n")
    assert home.status()["pending_uploads"] == 1
    assert not (home.share.root / "at-logout.txt").exists()
    m.systemctl("stop", UNIT, check=True)
    assert not home.mounted()
    assert (home.share.root / "at-logout.txt").read_text() == "saved just before logging out\n"
    assert home.docs.is_dir() and list(home.docs.iterdir()) == []

    # a restart right after a start: the data dir is free when the next mount comes
    m.systemctl("start", UNIT, check=True)
    m.systemctl("restart", UNIT, check=True)
    shown = m.show(UNIT, "ActiveState", "SubState", "Result", "NRestarts")
    assert shown == {"ActiveState": "active", "SubState": "running", "Result": "success",
                     "NRestarts": "0"}, m.systemctl("status", UNIT).stdout
    assert (home.docs / "at-logout.txt").read_text() == "saved just before logging out\n"
    log = next((Path(home.env["XDG_DATA_HOME"]) / "cscfs").glob("*/daemon.log")).read_text()
    assert "in use" not in log

    listed = json.loads(cscfs("redirect", "--list", "--json").stdout)
    assert [(r["unit"], r["mode"]) for r in listed] == [("active", "online")]
    out = home.redirect("--remove", "documents", "--leave")
    assert out.returncode == 0, out.stdout + out.stderr
    assert not home.mounted() and not home.unit_file().exists()
    assert m.show(UNIT, "ActiveState")["ActiveState"] == "inactive"


def test_a_login_on_a_computer_not_primary_under_a_real_user_manager(home, user_manager):
    """The unit does not mount, says why in its status, moves the files back, and ends
    as a success: no restart every RestartSec."""
    m = user_manager
    home.fill()
    home.write_config("primary_computers_only = true\n")
    (home.share.root / ".cscfs").mkdir()
    (home.share.root / ".cscfs" / "primary-computers").write_text(MACHINE + "\n")
    out = home.redirect("documents", home.share.url, "--credentials",
                        str(home.share.credentials), "--removal-policy", "move-back")
    assert out.returncode == 0, out.stdout + out.stderr
    m.systemctl("stop", UNIT, check=True)
    (home.share.root / ".cscfs" / "primary-computers").write_text("ffff\n")
    on_server = tree(home.share.root)

    said = set()

    def ended() -> bool:
        shown = m.show(UNIT, "ActiveState", "SubState", "StatusText")
        said.add(shown["StatusText"])
        return shown["ActiveState"] in ("inactive", "failed") or shown["SubState"] == "auto-restart"

    m.systemctl("start", "--no-block", UNIT, check=True)
    wait_for(ended, 60, interval=0.01, what="the unit to end")
    shown = m.show(UNIT, "ActiveState", "SubState", "Result", "StatusText", "ExecMainStatus")
    assert (shown["ActiveState"], shown["SubState"], shown["Result"]) == (
        "inactive", "dead", "success"), m.systemctl("status", UNIT).stdout
    assert any("is not a primary computer for documents" in t and "move-back" in t
               for t in said), said
    assert not home.mounted()
    assert tree(home.docs) == {r: h for r, h in on_server.items() if not r.startswith(".cscfs/")}
    assert json.loads(cscfs("redirect", "--list", "--json").stdout) == []
