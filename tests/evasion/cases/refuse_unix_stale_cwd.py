# Technique: connect to a Unix socket by a relative name after a chdir whose event the
# monitor lost. A sibling process floods the ring buffer with directory changes of its
# own, so that the agent's own chdir into the outside directory is dropped; the daemon
# then resolves `runtime.sock` against the working directory it last knew (the
# workspace, which has an allowed socket of that name) while the kernel connected to the
# one outside.
# Stopped because a held connect is judged by what the socket reached (the kernel's
# sock_diag: the listener it is queued on), not by the name and a working directory.
# ARGS: workspace, outside directory (both hold a listening `runtime.sock`)
ws, outside = ARGS
import time

os.chdir(ws)
time.sleep(0.3)
ready_r, ready_w = os.pipe()
child = os.fork()
if child == 0:
    # The flood: a sibling's own chdir loop for at most 6 seconds; says so once running.
    end = time.monotonic() + 6
    first = True
    while time.monotonic() < end:
        for _ in range(200):
            os.chdir("/")
            os.chdir(ws)
        if first:
            os.write(ready_w, b"x")
            first = False
    os._exit(0)
os.read(ready_r, 1)


def connect_many():
    sent = 0
    for _ in range(30):
        os.chdir(outside)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect("runtime.sock")
            s.send(b"LEAKED-BYTES")
            sent += 1
        except OSError:
            pass
        finally:
            s.close()
        os.chdir(ws)
    return sent


attempt("connect", connect_many)
os.kill(child, 9)
os.waitpid(child, 0)
