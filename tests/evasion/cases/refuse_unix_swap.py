# Technique: win the race between a held Unix-socket connect and the daemon's judgment of
# its path. The agent connects through a symlink in its workspace while a sibling process
# (not stopped by the hold) keeps re-pointing that symlink between an allowed socket and
# one outside the scope. A daemon that judges the path string after the fact sees the
# allowed target about half the time and releases a connect that reached the outside one.
# Stopped because a held connect is judged by what the socket reached (the kernel's
# sock_diag: the listener it is queued on), not by the path: every connect that reached
# the outside socket is killed before a byte moves.
# ARGS: workspace, allowed socket, outside socket
ws, allowed, outside = ARGS
import time

link = f"{ws}/link.sock"
os.symlink(allowed, link)
ready_r, ready_w = os.pipe()
child = os.fork()
if child == 0:
    # The sibling: swap the symlink (every 0.2 ms, for at most 30 seconds); says so after
    # its first swap.
    end = time.monotonic() + 30
    i = 0
    while time.monotonic() < end and os.getppid() != 1:
        if i == 2:
            os.write(ready_w, b"x")
        time.sleep(0.0002)
        tmp = f"{ws}/tmp-{i % 2}.sock"
        try:
            os.symlink(outside if i % 2 == 0 else allowed, tmp)
            os.replace(tmp, link)
        except OSError:
            pass
        i += 1
    os._exit(0)


os.read(ready_r, 1)


def connect_many():
    # 30 connects while the sibling swaps (at most 20 seconds): about half of them reach
    # the outside socket.
    sent = 0
    tries = 0
    end = time.monotonic() + 20
    while tries < 30 and time.monotonic() < end:
        tries += 1
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(link)
        except OSError:
            continue
        s.send(b"LEAKED-BYTES")
        s.close()
        sent += 1
    return sent


attempt("connect", connect_many)
os.kill(child, 9)
os.waitpid(child, 0)
