#!/usr/bin/env python3
"""Abuse test: the example participant server, run as users run it, under a descriptor limit.

    python3 tests/abuse/abuse.py path/to/participant_server

Starts `participant_server` on 127.0.0.1 (a free port, a temporary directory, a bearer token)
under `ulimit -n 503`, so that the limits it derives from its descriptor limit are small, and
then, as a crowd of careless or hostile clients would:

1. fills the server with idle keep-alive connections from 127.0.0.1 (each asked /health once):
   every one is answered, and the server keeps open no more of them than its derived connection
   limit (it closes the oldest idle ones to admit new ones);
2. a second crowd, from 127.0.0.3, starts requests and never finishes their bodies (slowloris,
   with the token): past its per-client share each is answered 503 too_many_connections at once;
3. a third client, from 127.0.0.6, takes the connections left; a legitimate client, from
   127.0.0.2, is then served within a bound (the server closes an idle connection for it);
4. clients without the token send bodies just under body_limit: each is answered 401 on its
   header, and the server's resident memory (VmRSS, /proc) stays flat;
5. the slow requests of step 2 are answered 408 when their read_timeout passes;
6. the server still serves: the try's confirm, and /health.

Linux routes all of 127.0.0.0/8 to the loopback device, so the crowds and the legitimate client
differ by their source address as clients on other hosts would. Every wait is bounded; the server
is stopped by its PID on every way out. Exit status 0 when every check holds.
"""

import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

TOKEN = "abuse-test-token"
NOFILE = 503
BODY_LIMIT = 1024 * 1024  # the server's default body_limit
DEADLINE = time.monotonic() + 120  # the whole test

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(port, source="127.0.0.1", timeout=5.0):
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def read_answer(s):
    """Reads one answer: (status, headers, body); status 0 if the connection closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return 0, "", b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    head = head.decode("latin-1")
    status = int(head.split(" ", 2)[1])
    m = re.search(r"(?im)^content-length:\s*(\d+)", head)
    length = int(m.group(1)) if m else 0
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, head, rest[:length]


def request(method, target, body=b"", token=TOKEN, extra=""):
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def branch(op, gid, qty=1):
    return request("POST", f"/dtx/stock?gid={gid}&trans_type=tcc&op={op}&branch_id=01",
                   b'{"qty":%d}' % qty)


def resident_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def still_open(s):
    """Whether the server still holds the connection (no FIN received)."""
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        s.settimeout(5.0)


def idle_crowd(port, source, count):
    """Opens `count` connections from `source`, each asking /health once and then idle.
    Returns the sockets; every one must have been answered 200."""
    held, other = [], []
    for _ in range(count):
        if time.monotonic() > DEADLINE:
            break
        s = connect(port, source)
        s.sendall(request("GET", "/health", token=None))
        try:
            status, _, body = read_answer(s)
        except socket.timeout:
            status, body = -1, b"timeout"
        if status != 200:
            other.append((status, body[:80]))
        held.append(s)
    check(not other and len(held) == count,
          f"idle crowd from {source}: all {count} connections answered 200 (others: {other[:3]})")
    return held


def slow_crowd(port, source, count):
    """Opens up to `count` connections from `source`, each sending a request's header and half
    of its body. Returns (held, refused): the connections the server keeps reading, and how many
    were answered 503 too_many_connections at once. A refused connection may also be closed
    without an answer: the server answers at most max_refusing refusals at a time (a flood of
    refusals must not cost it what serving would). Anything else is a failure."""
    held, refused, dropped, other = [], 0, 0, []
    head = request("POST", "/dtx/stock?gid=slow&trans_type=tcc&op=try&branch_id=01").replace(
        b"Content-Length: 0", b"Content-Length: 10")
    sockets = []
    for _ in range(count):
        s = connect(port, source)
        s.sendall(head + b'{"qty"')
        sockets.append(s)
    time.sleep(1.0)  # a refusal comes at once; a held connection answers nothing yet
    for s in sockets:
        ready, _, _ = select.select([s], [], [], 0)
        if not ready:
            held.append(s)
            continue
        try:
            status, _, body = read_answer(s)
        except ConnectionResetError:
            status, body = 0, b""
        if status == 503 and b"too_many_connections" in body:
            refused += 1
        elif status == 0:
            dropped += 1  # refused while max_refusing others were being answered: closed at once
        else:
            other.append((status, body[:80]))
        s.close()
    check(not other, f"slow crowd from {source}: every connection held, answered 503 "
          f"too_many_connections or closed ({len(held)} held, {refused} refused with 503, "
          f"{dropped} closed, others: {other[:3]})")
    return held, refused


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    server_path = os.path.abspath(sys.argv[1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="dtx-abuse-") as work:
        log = open(os.path.join(work, "server.log"), "w")
        server = subprocess.Popen(
            ["bash", "-c", f'ulimit -n {NOFILE} && exec "$0" "$@"', server_path, str(port),
             TOKEN], cwd=work, stdout=log, stderr=subprocess.STDOUT)
        try:
            return run(server, port)
        finally:
            server.send_signal(signal.SIGKILL)
            server.wait(timeout=10)
            log.close()
            if failures:
                with open(os.path.join(work, "server.log")) as f:
                    print("---- server log (last 40 lines) ----")
                    print("".join(f.readlines()[-40:]))


def run(server, port):
    for _ in range(200):  # up to 10 s for the server to listen
        try:
            with connect(port) as s:
                s.sendall(request("GET", "/health", token=None))
                if read_answer(s)[0] == 200:
                    break
        except OSError:
            time.sleep(0.05)
    else:
        check(False, "the server listens")
        return 1
    with open(f"/proc/{server.pid}/limits") as f:
        check(re.search(rf"Max open files\s+{NOFILE}\s", f.read()) is not None,
              f"the server runs with {NOFILE} descriptors")

    # 1: idle keep-alive connections; the server keeps a bounded number of them open.
    idle = idle_crowd(port, "127.0.0.1", 600)
    time.sleep(0.3)
    open_idle = sum(still_open(s) for s in idle)
    print(f"     idle connections the server keeps open: {open_idle} of {len(idle)}")
    check(open_idle < NOFILE * 3 // 4 + 1,
          "the server keeps open no more idle connections than its descriptors allow")

    # 2: slow requests from one client: its share is capped, the rest refused at once.
    slow, refused = slow_crowd(port, "127.0.0.3", 300)
    check(refused > 0 and len(slow) < NOFILE // 2,
          f"one client holds under half the descriptors ({len(slow)} slow requests held)")

    # 3: the legitimate client is served, in time, with the server full: a few more idle
    # connections from a third address take what the two crowds left.
    idle += idle_crowd(port, "127.0.0.6", 20)
    t0 = time.monotonic()
    with connect(port, "127.0.0.2") as s:
        s.sendall(branch("try", "abuse-1"))
        status, _, body = read_answer(s)
    waited = time.monotonic() - t0
    check(status == 200, f"the legitimate client's try is answered 200 (got {status} {body[:80]})")
    check(waited < 2.0, f"the legitimate client is served within 2 s ({waited * 1000:.0f} ms)")
    for s in idle:
        s.close()

    # 4: unauthenticated bodies, refused on their header; memory stays flat.
    time.sleep(0.2)
    before = resident_kib(server.pid)
    head = request("POST", "/dtx/stock?gid=abuse-2&trans_type=tcc&op=try&branch_id=01",
                   token=None).replace(b"Content-Length: 0",
                                       b"Content-Length: %d" % (BODY_LIMIT - 1))
    body = b"x" * (BODY_LIMIT - 2)  # all but the last byte
    senders = []
    for i in range(150):
        s = connect(port, "127.0.0.4" if i % 2 else "127.0.0.5")
        s.setblocking(False)
        try:
            s.sendall(head)
            s.send(body)  # as much as the socket takes; the server reads none of it
        except (BlockingIOError, OSError):
            pass
        s.setblocking(True)
        s.settimeout(5.0)
        senders.append(s)
    time.sleep(0.5)  # what a server that reads bodies would have read by now, it holds
    after = resident_kib(server.pid)
    statuses = []
    for s in senders:
        try:
            statuses.append(read_answer(s)[0])
        except (socket.timeout, OSError):
            statuses.append(-1)
        s.close()
    print(f"     resident memory: {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after "
          f"{len(senders)} unauthenticated bodies of {BODY_LIMIT} bytes")
    check(all(st == 401 for st in statuses),
          f"every unauthenticated body is answered 401 ({sorted(set(statuses))})")
    check(after - before < 16 * 1024, "resident memory grows by under 16 MiB")

    # 5: the slow requests end with 408 when read_timeout (10 s) has passed.
    late = []
    for s in slow:
        s.settimeout(max(0.1, DEADLINE - time.monotonic()))
        try:
            late.append(read_answer(s)[0])
        except (socket.timeout, OSError):
            late.append(-1)
        s.close()
    check(all(st == 408 for st in late), f"every slow request is answered 408 ({sorted(set(late))})")

    # 6: still serving.
    with connect(port, "127.0.0.2") as s:
        s.sendall(branch("confirm", "abuse-1"))
        check(read_answer(s)[0] == 200, "the try's confirm is answered 200")
        s.sendall(request("GET", "/health", token=None))
        check(read_answer(s)[0] == 200, "/health still answers")
    check(server.poll() is None, "the server is still running")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
