"""A stand-in model server for the supervisor's tests, misbehaving on demand.

Run it by path (``python -S tests/fakes/managed_server.py --port 8080 ...``): it imports
nothing from Vigil (nor anything slow to import: crash loops start it many times), so it runs
the same under the in-process supervisor and under a real agent. It prints ``server pid=N
start`` first, so a test can see in the captured log that it ran.

- ``--port N``: serve HTTP on 127.0.0.1:N, one request at a time (every GET answers 200 ok).
- ``--wait-file F``: a slow start-up ("loading weights"): listen only once F exists.
- ``--crash-first N --counter F``: crash (exit 1) at start-up on the first N runs, counted in F.
- ``--hang-file F``: a request arriving while F exists removes F and is never answered: the
  server hangs (it serves one request at a time, so nothing after it is answered either) and
  the next incarnation, finding no F, answers again.
- ``--fork-child F``: fork a worker that ignores SIGTERM, writes its pid to F and sleeps. With
  ``--port`` it is forked after the port is bound, so it holds the port too, as a real
  server's workers do; without, before the ``--wait-file`` wait.
- ``--ignore-term``: the server itself ignores SIGTERM.
- ``--spam N``: print about N bytes of output (100-byte lines) first.
- ``--exit CODE``: after start-up (and ``--run-for`` seconds), exit with CODE instead of
  serving; a forked worker is left behind, as a crash leaves it.
- SIGUSR1 makes it print ``got SIGUSR1`` (output on demand, for the log tests).
- ``--pidfile F``: write the pid to F (a process someone else started, found by pidfile).
- ``--record-signals F``: on SIGTERM or SIGINT, append ``PID SIGNAME`` to F and exit 0 (what
  a stop sent). ``PID ready`` is appended once the handlers are in place: a stop sent
  earlier would meet Python's defaults instead.
- ``--spawn``: start this same command line (minus ``--spawn``) in a new session and exit at
  once: a remediation command bringing back a process the agent does not own.

Extra positional words are ignored: a test marks a command line with them (``match``).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from pathlib import Path

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"


def _serve(sock: socket.socket, hang_file: Path | None) -> None:
    """HTTP, one connection at a time (no http.server: start-up time matters here)."""
    while True:
        conn, _ = sock.accept()
        with conn:
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break  # a TCP probe: connected and closed
                    data += chunk
                if not data:
                    continue
                if hang_file is not None and hang_file.exists():
                    hang_file.unlink()
                    while True:  # accepted, never answered: a hung model server
                        time.sleep(3600)
                conn.sendall(_OK)
            except OSError:
                continue


def _fork_worker(pidfile: Path) -> None:
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        tmp = pidfile.with_suffix(".tmp")
        tmp.write_text(str(os.getpid()))
        tmp.replace(pidfile)
        while True:
            time.sleep(3600)
    # Go on once the worker ignores SIGTERM (it says so by writing its pid), so a stop that
    # comes at once still finds it ignoring SIGTERM.
    while not (pidfile.exists() and pidfile.read_text() == str(pid)):
        time.sleep(0.005)


def _record_signals(path: Path) -> None:
    def record(signum: int, _frame: object) -> None:
        # One O_APPEND write per line: a signal sent to the group and to the pid may run this
        # twice, and neither line may be torn.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, f"{os.getpid()} {signal.Signals(signum).name}\n".encode())
        os.close(fd)
        os._exit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, record)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, f"{os.getpid()} ready\n".encode())
    os.close(fd)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int)
    p.add_argument("--wait-file", type=Path)
    p.add_argument("--crash-first", type=int, default=0)
    p.add_argument("--counter", type=Path)
    p.add_argument("--hang-file", type=Path)
    p.add_argument("--fork-child", type=Path)
    p.add_argument("--ignore-term", action="store_true")
    p.add_argument("--spam", type=int, default=0)
    p.add_argument("--exit", type=int)
    p.add_argument("--run-for", type=float, default=0.0)
    p.add_argument("--pidfile", type=Path)
    p.add_argument("--spawn", action="store_true")
    p.add_argument("--record-signals", type=Path)
    p.add_argument("tag", nargs="*")
    args = p.parse_args()

    if args.spawn:
        import subprocess

        argv = [sys.executable, "-S", *(a for a in sys.argv if a != "--spawn")]
        subprocess.Popen(
            argv,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        print(f"spawned {' '.join(argv[1:])}", flush=True)
        return
    print(f"server pid={os.getpid()} start", flush=True)
    signal.signal(signal.SIGUSR1, lambda *_: print("got SIGUSR1", flush=True))
    if args.pidfile:
        tmp = args.pidfile.with_suffix(".tmp")
        tmp.write_text(str(os.getpid()))
        tmp.replace(args.pidfile)
    if args.record_signals:
        _record_signals(args.record_signals)
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for _ in range(args.spam // 100):
        print("x" * 99)
    sys.stdout.flush()
    if args.counter is not None:
        runs = int(args.counter.read_text()) if args.counter.exists() else 0
        args.counter.write_text(str(runs + 1))
        if runs < args.crash_first:
            print(f"fatal: start-up failed on run {runs + 1}", flush=True)
            sys.exit(1)
    if args.fork_child is not None and not args.port:
        _fork_worker(args.fork_child)
    if args.wait_file is not None:
        print("loading weights", flush=True)
        while not args.wait_file.exists():
            time.sleep(0.02)
    sock = None
    if args.port:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", args.port))
        sock.listen(16)
        print(f"listening on 127.0.0.1:{args.port}", flush=True)
    if args.fork_child is not None and args.port:
        _fork_worker(args.fork_child)
    if args.exit is not None:
        time.sleep(args.run_for)
        print(f"exiting {args.exit}", flush=True)
        os._exit(args.exit)
    if sock is not None:
        _serve(sock, args.hang_file)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
