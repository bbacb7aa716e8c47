"""A real Kannel SMS gateway on loopback, for the tests and the demo.

`LocalKannel` starts Debian's ``bearerbox`` and ``smsbox`` on free ports of
127.0.0.1, in a folder it owns, with two fake SMSCs whose clients are Python
sockets in this process: ``fake-mt`` receives every message sent through
sendsms (kept in `LocalKannel.mt_lines`), ``fake-mo`` lets a test inject a
reply from a phone (`LocalKannel.inject_mo`), which smsbox forwards to the MO
callback URL it was given. Every socket of Kannel and of this module is bound
to or connects to 127.0.0.1 only. Processes are stopped by their own PIDs.

Kannel logs warnings and errors only (``<folder>/logs``): at its info level
it writes every number and text it handles. Kannel's errors may still name a
callback URL, which holds a number; the folder belongs to a test run. This
module's own log lines carry ports, PIDs and counts, never a number or text.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from gateway.errors import ConfigurationError

log = logging.getLogger(__name__)

__all__ = ["BEARERBOX", "SMSBOX", "LocalKannel"]

BEARERBOX = Path("/usr/sbin/bearerbox")
SMSBOX = Path("/usr/sbin/smsbox")
HOST = "127.0.0.1"
# What smsbox appends to the MO callback URL: sender, receiver, the words of
# the text, the original body, the SMSC id and Kannel's receive time.
MO_QUERY = "from=%p&to=%P&text=%a&body=%b&smsc=%i&ts=%t"
# Tollgate's longest body (1600 characters) is 11 concatenated parts.
MAX_PARTS = 11
_POLL = 0.02


class LocalKannel:
    """bearerbox + smsbox on loopback, with Python sockets as fake SMSCs.

    Use it as a context manager, or call `start` and `stop`::

        with LocalKannel(tmp_path, mo_url) as kannel:
            urlopen(kannel.sendsms_url + "?" + ...)
            kannel.mt_lines  # ["12345 +15551230001 text Hello", ...]
    """

    def __init__(
        self,
        folder: Path,
        mo_url: str,
        *,
        sender: str = "12345",
        ready_timeout: float = 10.0,
    ) -> None:
        if not mo_url.startswith(f"http://{HOST}:"):
            raise ValueError(f"mo_url must be an http://{HOST}: URL, got {mo_url!r}")
        self.folder = Path(folder).resolve()  # Kannel runs with cwd=folder
        self.mo_url = mo_url
        self.sender = sender
        self.ready_timeout = ready_timeout
        self._username = "tollgate"
        self._password = secrets.token_hex(12)
        self._status_password = secrets.token_hex(12)
        self._ports: dict[str, int] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._sockets: dict[str, socket.socket] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._mt_lines: list[str] = []
        self.ready_after = 0.0

    # -- the public surface --------------------------------------------------

    @staticmethod
    def available() -> bool:
        """True when Debian's bearerbox and smsbox binaries are installed."""
        return all(path.is_file() for path in (BEARERBOX, SMSBOX))

    @property
    def sendsms_url(self) -> str:
        return f"http://{HOST}:{self._port('sendsms')}/cgi-bin/sendsms"

    @property
    def username(self) -> str:
        return self._username

    @property
    def password(self) -> str:
        return self._password

    @property
    def log_dir(self) -> Path:
        return self.folder / "logs"

    @property
    def mt_lines(self) -> list[str]:
        """Every line the fake MT SMSC received so far, in order (a copy).

        Each is ``<sender> <receiver> text <message>``, or ``... data
        <url-encoded>`` for a text that is not plain GSM.
        """
        with self._lock:
            return list(self._mt_lines)

    def start(self) -> LocalKannel:
        """Start bearerbox, connect the fake SMSCs, start smsbox, wait for ready."""
        if not self.available():
            raise ConfigurationError(
                f"Kannel is not installed: {BEARERBOX} and {SMSBOX} are needed "
                "(run scripts/ensure-kannel)"
            )
        started = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.ready_after = time.monotonic() - started
        log.info(
            "kannel ready after %.2fs: sendsms port %d, pids bearerbox=%d smsbox=%d",
            self.ready_after,
            self._ports["sendsms"],
            self._procs["bearerbox"].pid,
            self._procs["smsbox"].pid,
        )
        return self

    def inject_mo(self, sender: str, receiver: str, text: str) -> None:
        """Hand bearerbox a reply from `sender`, as if a phone had sent it."""
        mo = self._sockets.get("fake-mo")
        if mo is None:
            raise RuntimeError("LocalKannel is not started")
        encoded = quote(text.encode("utf-8"), safe="")
        mo.sendall(f"{sender} {receiver} data {encoded}\n".encode("ascii"))
        log.debug("kannel: injected one MO of %d characters", len(text))

    def wait_for_mt(self, count: int, timeout: float = 10.0) -> list[str]:
        """Wait until at least `count` MT lines arrived; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.mt_lines
            if len(lines) >= count or time.monotonic() >= deadline:
                return lines
            time.sleep(_POLL)

    def stop(self) -> None:
        """Stop smsbox, then bearerbox, by PID; close the fake SMSC sockets."""
        for name in ("smsbox", "bearerbox"):
            proc = self._procs.get(name)
            if proc is not None:
                _terminate(name, proc)
        for sock in self._sockets.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader thread
            sock.close()
        self._sockets = {}
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def __enter__(self) -> LocalKannel:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- starting ------------------------------------------------------------

    def _start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._ports = _free_ports("admin", "box", "sendsms", "fake-mt", "fake-mo")
        config = self.folder / "kannel.conf"
        config.write_text(self._config(), encoding="utf-8")

        # 1. bearerbox first: the fake SMSC ports and the box port are its.
        self._spawn("bearerbox", BEARERBOX, config)

        # 2. The fake SMSC clients; a connect succeeds once bearerbox listens.
        for name in ("fake-mt", "fake-mo"):
            self._sockets[name] = self._connect(name)
        self._reader("fake-mt", self._mt_lines)
        self._reader("fake-mo", None)

        # 3. smsbox connects to bearerbox and opens the sendsms port.
        self._spawn("smsbox", SMSBOX, config)

        # 4. Ready when bearerbox reports smsbox and both SMSCs online.
        self._wait_until_ready()

    def _config(self) -> str:
        p, logs = self._ports, self.log_dir
        separator = "&" if "?" in self.mo_url else "?"
        return f"""\
# Written by gateway.kannel_local: loopback only, ports picked at start.
group = core
admin-port = {p["admin"]}
admin-interface = {HOST}
admin-password = {secrets.token_hex(12)}
status-password = {self._status_password}
admin-allow-ip = "{HOST}"
smsbox-port = {p["box"]}
smsbox-interface = {HOST}
box-allow-ip = "{HOST}"
log-file = "{logs / "bearerbox.log"}"
log-level = 2
dlr-storage = internal

group = smsc
smsc = fake
smsc-id = fake-mt
port = {p["fake-mt"]}
our-host = {HOST}
connect-allow-ip = "{HOST}"

# Only for injecting replies: never picked for outgoing messages.
group = smsc
smsc = fake
smsc-id = fake-mo
allowed-smsc-id = fake-mo
port = {p["fake-mo"]}
our-host = {HOST}
connect-allow-ip = "{HOST}"

group = smsbox
bearerbox-host = {HOST}
bearerbox-port = {p["box"]}
sendsms-port = {p["sendsms"]}
sendsms-interface = {HOST}
log-file = "{logs / "smsbox.log"}"
log-level = 2
http-request-retry = 2
http-queue-delay = 1

group = sendsms-user
username = {self._username}
password = {self._password}
max-messages = {MAX_PARTS}
concatenation = true

# Every reply goes to the MO callback; max-messages = 0: no automatic answer.
group = sms-service
keyword = default
get-url = "{self.mo_url}{separator}{MO_QUERY}"
max-messages = 0
"""

    def _spawn(self, name: str, binary: Path, config: Path) -> None:
        with (self.log_dir / f"{name}.out").open("wb") as out:
            self._procs[name] = subprocess.Popen(
                [str(binary), "-v", "2", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
            )
        log.debug("kannel: %s started, pid %d", name, self._procs[name].pid)

    def _connect(self, name: str) -> socket.socket:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            self._check_running("bearerbox")
            try:
                return socket.create_connection((HOST, self._ports[name]), timeout=1)
            except OSError:
                if time.monotonic() >= deadline:
                    raise self._not_ready(
                        "bearerbox", f"its {name} port never accepted a connection"
                    ) from None
                time.sleep(_POLL)

    def _reader(self, name: str, into: list[str] | None) -> None:
        sock = self._sockets[name]
        sock.settimeout(None)
        thread = threading.Thread(
            target=self._read_lines,
            args=(name, sock, into),
            name=f"kannel-{name}",
            daemon=True,
        )
        thread.start()
        self._threads.append(thread)

    def _read_lines(
        self, name: str, sock: socket.socket, into: list[str] | None
    ) -> None:
        buffer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return  # closed by stop()
            if not chunk:
                log.debug("kannel: %s connection closed by bearerbox", name)
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            if into is None:
                log.warning("kannel: %d unexpected lines on %s", len(lines), name)
                continue
            with self._lock:
                into.extend(
                    line.decode("utf-8", "replace").rstrip("\r") for line in lines
                )

    def _wait_until_ready(self) -> None:
        url = (
            f"http://{HOST}:{self._ports['admin']}/status.txt"
            f"?password={self._status_password}"
        )
        deadline = time.monotonic() + self.ready_timeout
        status = ""
        while time.monotonic() < deadline:
            for name in self._procs:
                self._check_running(name)
            status = _fetch(url)
            if _is_ready(status):
                return
            time.sleep(_POLL)
        last = status.strip().splitlines()[:3] or ["no answer"]
        raise self._not_ready(
            "smsbox",
            f"after {self.ready_timeout:.0f}s the status page still says "
            f"{' / '.join(last)!r}",
        )

    def _check_running(self, name: str) -> None:
        code = self._procs[name].poll()
        if code is not None:
            raise self._not_ready(name, f"it exited with code {code}")

    def _not_ready(self, name: str, problem: str) -> ConfigurationError:
        return ConfigurationError(
            f"Kannel's {name} did not start: {problem}; see "
            f"{self.log_dir / (name + '.log')} and {self.log_dir / (name + '.out')}"
        )

    def _port(self, name: str) -> int:
        if name not in self._ports:
            raise RuntimeError("LocalKannel is not started")
        return self._ports[name]


def _is_ready(status: str) -> bool:
    """smsbox connected and both fake SMSCs online, per bearerbox's status."""
    lines = status.splitlines()

    def has(*words: str) -> bool:
        return any(all(word in line for word in words) for line in lines)

    return (
        has("smsbox:", "on-line")
        and has("fake-mt[fake-mt]", "(online")
        and has("fake-mo[fake-mo]", "(online")
    )


def _fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            body: bytes = answer.read()
    except (OSError, urllib.error.URLError):
        return ""
    return body.decode("utf-8", "replace")


def _free_ports(*names: str) -> dict[str, int]:
    """Ports the kernel just gave out on loopback, all distinct."""
    holders = []
    try:
        for _ in names:
            holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            holder.bind((HOST, 0))
            holders.append(holder)
        return {
            name: holder.getsockname()[1]
            for name, holder in zip(names, holders, strict=True)
        }
    finally:
        for holder in holders:
            holder.close()


def _terminate(name: str, proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("kannel: %s (pid %d) ignored SIGTERM; killing", name, proc.pid)
            proc.kill()
            proc.wait(timeout=5)
    log.debug("kannel: %s (pid %d) exited with %s", name, proc.pid, proc.returncode)
