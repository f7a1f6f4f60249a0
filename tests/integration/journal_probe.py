# SPDX-License-Identifier: MIT
"""Runs inside a private mount namespace (test_journal.py starts it with unshare -m): a
tmpfs over /run/systemd/journal, a datagram socket at its `socket` playing journald, the
daemon with stderr connected to a file named by JOURNAL_STREAM; prints the fields of every
entry received as JSON lines, then exits. Arguments: WORKSPACED REPO MACHINE RUNDIR STATEDIR
SANDBOX OUT."""
import json
import os
import socket
import subprocess
import sys
import time

workspaced, repo, machine, rundir, statedir, sandbox, out = sys.argv[1:8]
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
os.makedirs("/run/systemd/journal", exist_ok=True)
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/systemd/journal"], check=True)
srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
srv.bind("/run/systemd/journal/socket")
srv.settimeout(0.2)

stderr_path = os.path.join(rundir, "stderr")
err = open(stderr_path, "wb")
st = os.fstat(err.fileno())
env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino), XDG_RUNTIME_DIR=rundir)
sock = os.path.join(rundir, "workspaced.sock")
p = subprocess.Popen([workspaced, "--repo", repo, "--machine", machine, "--socket", sock,
                      "--state-dir", statedir, "--sandbox-root", sandbox, "--verify", "none"],
                     stderr=err, stdout=err, env=env)
for _ in range(200):
    if os.path.exists(sock):
        break
    time.sleep(0.02)
time.sleep(0.1)
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.connect(sock)
c.sendall(b'{"jsonrpc":"2.0","id":"req-7","method":"workspace.create",'
          b'"params":{"name":"jdev","type":"container"}}\n')
c.recv(65536)
c.close()
time.sleep(0.2)
p.terminate()
p.wait(10)


def fields(data):
    """The journal's native protocol: KEY=value lines, or KEY\\n + 64-bit LE size + data."""
    f, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            f[k.decode()] = v.decode(errors="replace")
            i = nl + 1
        else:
            n = int.from_bytes(data[nl + 1:nl + 9], "little")
            f[line.decode()] = data[nl + 9:nl + 9 + n].decode(errors="replace")
            i = nl + 9 + n + 1
    return f


with open(out, "w") as o:
    while True:
        try:
            data = srv.recv(1 << 20)
        except socket.timeout:
            break
        o.write(json.dumps(fields(data)) + "\n")
with open(stderr_path, "rb") as f:
    sys.stdout.write(f.read().decode(errors="replace"))
