"""SambaRig: a real smbd in the network namespace `cscfs-test-ns`, reached from this machine
over two links:

  fast_host 10.200.0.2  veth pair cst-h <-> cst-n, kernel speed; veth_down() / veth_up()
  wire_host 10.201.0.2  TUN pair cst-t0 <-> cst-t1 run by tunwire.py; set_rtt(), set_loss(),
                        set_rate(), cut() (a blackhole), restore()

Needs root, smbd + smbpasswd (samba), ip (iproute2), useradd, /dev/net/tun and the smbclient
module (smbprotocol); missing() says what is absent. The namespace, link names and subnets are
fixed, so only one rig runs at a time; start() first removes what a crashed run left behind.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

NS = "cscfs-test-ns"
LINK_PREFIX = "cst-"
VETH_HOST, VETH_NS = "cst-h", "cst-n"
TUN_HOST, TUN_NS = "cst-t0", "cst-t1"
VETH_HOST_IP, TUN_HOST_IP = "10.200.0.1", "10.201.0.1"
FENCES = ("10.200.0.0/24", "10.201.0.0/24")
FENCE_METRIC = "4000"
TUNWIRE = Path(__file__).with_name("tunwire.py")
WIRE_DEFAULT = {"mode": "up", "rtt_ms": 0, "loss_pct": 0, "rate_kbit": 0}
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


class RigError(RuntimeError):
    """The rig could not be set up; the message says which step and why."""


def _run(*cmd: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, input=input, capture_output=True, text=True)
    if check and r.returncode:
        raise RigError(f"{' '.join(cmd)}: {(r.stderr or r.stdout).strip()}")
    return r


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), None when gone or a zombie.

    Stored next to each PID so a reused PID is never mistaken for ours."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return None if fields[0] in "ZX" else int(fields[19])


def _terminate(procs: list[tuple[int, int]]) -> None:
    """SIGTERM each (pid, start time) still alive, SIGKILL what outlives STOP_GRACE."""
    def alive():
        return [(p, t) for p, t in procs if _start_time(p) == t]

    for sig, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, 2.0)):
        for pid, _ in alive():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not alive():
            return


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class SambaRig:
    fast_host = "10.200.0.2"
    wire_host = "10.201.0.2"
    port = 445
    user = "smbtest"
    password = "Secret123"  # test-only account, reachable only inside this machine
    share = "share"
    uid = 4445  # the account's uid/gid; start() takes the real ones if the account pre-exists
    gid = 4445

    def __init__(self, base_dir: Path):
        self.base_dir = Path(base_dir).absolute()
        self.share_dir = self.base_dir / "share"
        self.samba_dir = self.base_dir / "samba"
        self.conf = self.samba_dir / "smb.conf"
        self.ctl = self.base_dir / "wire.ctl.json"
        self.smbd_pid: int | None = None
        self.tunwire_pid: int | None = None
        self._children: list[subprocess.Popen] = []
        self._wire = dict(WIRE_DEFAULT)

    # -- requirements --------------------------------------------------------------------

    @staticmethod
    def missing() -> str | None:
        """None when this machine can run the rig, else a one-line reason."""
        if os.geteuid() != 0:
            return "the SMB rig needs root (network namespace, links, smbd on port 445)"
        for tool, package in (("smbd", "samba"), ("smbpasswd", "samba"), ("ip", "iproute2"),
                              ("useradd", "passwd")):
            if shutil.which(tool) is None:
                return f"{tool} is missing (apt-get install {package})"
        if not os.path.exists("/dev/net/tun"):
            return "/dev/net/tun is missing (TUN devices for the delayable link)"
        if importlib.util.find_spec("smbclient") is None:
            return "the smbclient module is missing (pip install smbprotocol)"
        return None

    # -- life cycle ----------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Set everything up and wait until both addresses serve the share.

        Starts from an empty share. On failure everything is torn down again and RigError
        (or the underlying error) is raised; the logs stay under base_dir."""
        deadline = time.monotonic() + timeout
        self.stop()  # leftovers of a crashed run
        try:
            self._write_config()
            # Fences before any link: when a link goes away its connected route goes too, and
            # packets for the test subnets must then fail here, not follow the default route.
            for net in FENCES:
                _run("ip", "route", "add", "unreachable", net, "metric", FENCE_METRIC)
            _run("ip", "netns", "add", NS)
            _run("ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS,
                 "netns", NS)
            _run("ip", "addr", "add", f"{VETH_HOST_IP}/24", "dev", VETH_HOST)
            _run("ip", "link", "set", VETH_HOST, "up")
            _run("ip", "-n", NS, "addr", "add", f"{self.fast_host}/24", "dev", VETH_NS)
            _run("ip", "-n", NS, "link", "set", VETH_NS, "up")
            _run("ip", "-n", NS, "link", "set", "lo", "up")
            self._start_tunwire(deadline)
            self._ensure_account()
            self._start_smbd()
            self._wait_ready(deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop smbd and tunwire, delete links, namespace and fences. Idempotent; also cleans
        up after a partial start or a crashed earlier run of this rig."""
        procs = [rec for name in ("smbd", "tunwire") if (rec := self._read_pidfile(name))]
        # Whatever still runs in our namespace is ours too: smbd's children, or an smbd
        # from a crashed run whose pid file lived in another base_dir (its tunwire exits
        # by itself once orphaned).
        pids = _run("ip", "netns", "pids", NS, check=False).stdout.split()
        procs += [(int(p), t) for p in pids if (t := _start_time(int(p))) is not None]
        _terminate(procs)
        for child in self._children:
            child.wait(timeout=1)  # reap: we started them
        self._children.clear()
        for name in ("smbd", "tunwire"):
            self._pidfile(name).unlink(missing_ok=True)
        self.smbd_pid = self.tunwire_pid = None
        for line in _run("ip", "-o", "link", "show").stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith(LINK_PREFIX):
                _run("ip", "link", "del", name, check=False)  # a veth takes its peer along
        _run("ip", "netns", "del", NS, check=False)
        for net in FENCES:
            _run("ip", "route", "del", "unreachable", net, "metric", FENCE_METRIC, check=False)
        self._wire = dict(WIRE_DEFAULT)

    # -- link control ----------------------------------------------------------------------

    def set_rtt(self, ms: float) -> None:
        """Round-trip delay on the wire_host path (half each way)."""
        self._set_wire(rtt_ms=ms)

    def set_loss(self, pct: float) -> None:
        """Share of packets dropped at random, each direction, on the wire_host path."""
        self._set_wire(loss_pct=pct)

    def set_rate(self, kbit: float) -> None:
        """Bandwidth limit per direction on the wire_host path; 0 = unlimited."""
        self._set_wire(rate_kbit=kbit)

    def cut(self) -> None:
        """Blackhole the wire_host path: every packet silently dropped, no error to anyone."""
        self._set_wire(mode="drop")

    def restore(self) -> None:
        """Back to a clean wire_host path: up, no delay, no loss, no rate limit."""
        self._set_wire(**WIRE_DEFAULT)

    def veth_down(self) -> None:
        """Take the fast_host link down: its route vanishes, connects fail at once
        (EHOSTUNREACH from the fence route)."""
        _run("ip", "link", "set", VETH_HOST, "down")

    def veth_up(self, timeout: float = 2.0) -> None:
        """Bring the fast_host link back and wait until both ends pass packets."""
        _run("ip", "link", "set", VETH_HOST, "up")
        # The namespace end gets its carrier (and its qdisc) later, from the kernel's linkwatch
        # work; a packet sent before that is dropped and ARP retries only after 1 s.
        deadline = time.monotonic() + timeout
        while not all("state UP" in _run(*ip, "-o", "link", "show", dev).stdout
                      for ip, dev in ((("ip",), VETH_HOST), (("ip", "-n", NS), VETH_NS))):
            if time.monotonic() > deadline:
                raise RigError(f"{VETH_HOST} <-> {VETH_NS} not up after {timeout} s")
            time.sleep(0.005)

    # -- the server's disk -------------------------------------------------------------------

    def server_write(self, rel_path: str, data: bytes) -> Path:
        """Write a file straight into the share (not over SMB), owned by the share user."""
        path = self._share_path(rel_path)
        self._make_dirs(path.parent)
        path.write_bytes(data)
        os.chown(path, self.uid, self.gid)
        return path

    def server_mkdir(self, rel_path: str) -> Path:
        """Create a folder (and missing parents) straight in the share, owned by the share user."""
        path = self._share_path(rel_path)
        self._make_dirs(path)
        return path

    def url(self, host: str | None = None, path: str = "") -> str:
        """smb://smbtest@HOST/share[/path]; HOST defaults to wire_host (the controllable link)."""
        url = f"smb://{self.user}@{host or self.wire_host}/{self.share}"
        path = path.strip("/")
        return f"{url}/{path}" if path else url

    def credentials_file(self, path: Path) -> Path:
        """Write a cifs-style credentials file (mode 0600) for the share user."""
        path = Path(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"username={self.user}\npassword={self.password}\ndomain=WORKGROUP\n")
        os.chmod(path, 0o600)  # O_CREAT's mode does not apply to an existing file
        return path

    # -- internals ---------------------------------------------------------------------------

    def _pidfile(self, name: str) -> Path:
        return self.base_dir / f"{name}.pid"

    def _read_pidfile(self, name: str) -> tuple[int, int] | None:
        try:
            pid, start = map(int, self._pidfile(name).read_text().split())
        except (FileNotFoundError, ValueError):
            return None
        return pid, start

    def _spawn(self, name: str, cmd: list[str], log: Path) -> subprocess.Popen:
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)
        self._children.append(proc)
        # Recorded at once, so a crash later in start() still leaves a trace to clean up.
        self._pidfile(name).write_text(f"{proc.pid} {_start_time(proc.pid) or 0}\n")
        return proc

    def _write_config(self) -> None:
        for d in (self.share_dir, self.samba_dir):
            shutil.rmtree(d, ignore_errors=True)
        dirs = {d: self.samba_dir / d for d in
                ("private", "lock", "state", "cache", "pid", "ncalrpc", "log")}
        for d in dirs.values():
            d.mkdir(parents=True)
        self.share_dir.mkdir()
        self.base_dir.chmod(0o755)  # e.g. a 0700 mkdtemp
        # smbd enters the share as the share user, so every folder above it must be searchable.
        for d in self.share_dir.parents:
            if not d.stat().st_mode & stat.S_IXOTH:
                raise RigError(f"{d} is not searchable by others: smbd could not reach "
                               f"{self.share_dir} as {self.user}; use a base_dir elsewhere")
        self.conf.write_text(f"""\
[global]
   server role = standalone server
   workgroup = WORKGROUP
   netbios name = CSCFSTEST
   disable netbios = yes
   smb ports = {self.port}
   # inside the namespace: listen on every address (veth and TUN)
   bind interfaces only = no
   private dir = {dirs["private"]}
   lock directory = {dirs["lock"]}
   state directory = {dirs["state"]}
   cache directory = {dirs["cache"]}
   pid directory = {dirs["pid"]}
   ncalrpc dir = {dirs["ncalrpc"]}
   log file = {dirs["log"]}/log.%m
   passdb backend = tdbsam:{dirs["private"]}/passdb.tdb
   map to guest = never
   load printers = no
   printing = bsd
   printcap name = /dev/null
   disable spoolss = yes
   server min protocol = SMB2_10
[{self.share}]
   path = {self.share_dir}
   read only = no
   valid users = {self.user}
   # root on the share, so that tests may also change it straight on the disk as root
   admin users = {self.user}
""")

    def _start_tunwire(self, deadline: float) -> None:
        self._write_ctl()
        log = self.base_dir / "tunwire.log"
        log.unlink(missing_ok=True)
        proc = self._spawn("tunwire", [
            sys.executable, str(TUNWIRE), "--ns", NS, "--ctl", str(self.ctl),
            "--host-if", TUN_HOST, "--ns-if", TUN_NS, "--host-ip", TUN_HOST_IP,
            "--ns-ip", self.wire_host, "--fence", FENCES[1]], log)
        self.tunwire_pid = proc.pid
        while "ready" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RigError(f"tunwire did not come up:\n{_tail(log)}")
            time.sleep(0.01)

    def _ensure_account(self) -> None:
        # Samba maps the SMB user to a real Unix account; no home, no login.
        try:
            pw = pwd.getpwnam(self.user)
        except KeyError:
            _run("useradd", "-M", "-u", str(self.uid), "-s", "/usr/sbin/nologin", self.user)
            pw = pwd.getpwnam(self.user)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        os.chown(self.share_dir, self.uid, self.gid)
        _run("smbpasswd", "-c", str(self.conf), "-s", "-a", self.user,
             input=f"{self.password}\n{self.password}\n")

    def _start_smbd(self) -> None:
        # ip netns exec execs smbd, so the PID we get is smbd's own.
        proc = self._spawn("smbd", [
            "ip", "netns", "exec", NS, "smbd", "-F", "--debug-stdout", "-d", "1",
            "-s", str(self.conf)], self.samba_dir / "log" / "smbd.stdout")
        self.smbd_pid = proc.pid

    def _wait_ready(self, deadline: float) -> None:
        """Until an SMB session + listdir of the share works on both addresses."""
        import smbclient  # here, so that missing() can report its absence

        for host in (self.wire_host, self.fast_host):
            while True:
                cache: dict = {}
                try:
                    smbclient.register_session(host, username=self.user, password=self.password,
                                               port=self.port, connection_cache=cache,
                                               connection_timeout=2)
                    smbclient.listdir(rf"\\{host}\{self.share}", port=self.port,
                                      connection_cache=cache)
                    break
                except Exception as exc:
                    log = self.samba_dir / "log" / "smbd.stdout"
                    if _start_time(self.smbd_pid) is None:
                        raise RigError(f"smbd exited:\n{_tail(log)}") from exc
                    if time.monotonic() > deadline:
                        raise RigError(f"SMB on {host}:{self.port} not ready: {exc}\n"
                                       f"{_tail(log)}") from exc
                    time.sleep(0.05)
                finally:
                    try:
                        smbclient.reset_connection_cache(connection_cache=cache)
                    except Exception:
                        pass  # a half-open probe connection; nothing to keep

    def _set_wire(self, **changes) -> None:
        self._wire.update(changes)
        self._write_ctl()
        if self.tunwire_pid:
            os.kill(self.tunwire_pid, signal.SIGHUP)  # reload now, not at the next poll
            time.sleep(0.05)  # tunwire's loop picks it up within milliseconds

    def _write_ctl(self) -> None:
        tmp = self.ctl.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._wire) + "\n")
        os.replace(tmp, self.ctl)  # atomic: tunwire never reads half a file

    def _share_path(self, rel_path: str) -> Path:
        path = Path(os.path.normpath(self.share_dir / rel_path))
        if path == self.share_dir or not path.is_relative_to(self.share_dir):
            raise ValueError(f"{rel_path!r} is not a path inside the share")
        return path

    def _make_dirs(self, path: Path) -> None:
        missing = []
        while not path.exists():
            missing.append(path)
            path = path.parent
        for d in reversed(missing):
            d.mkdir()
            os.chown(d, self.uid, self.gid)
