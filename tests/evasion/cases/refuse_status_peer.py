# Technique: use the daemon's status socket through a connection whose peer is gone: a
# forked child connects (SO_PEERCRED then names the child's pid), passes the connected
# descriptors to its parent over a socketpair (SCM_RIGHTS) and exits; once the child is
# reaped the parent lists the agents and revokes another task on them. A daemon that
# looks the peer's pid up at request time finds no process, cannot tell it was inside an
# agent, and serves it as the root it claims to be.
# Stopped (intended) because the daemon refuses a peer it cannot place (403, or the
# connection closed without an answer): it fails closed.
# ARGS: socket path, victim task id
path, victim = ARGS
parent_end, child_end = socket.socketpair()
pid = os.fork()
if pid == 0:
    conns = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
    for c in conns:
        c.connect(path)
    socket.send_fds(child_end, [b"x"], [c.fileno() for c in conns])
    os._exit(0)
_, fds, _, _ = socket.recv_fds(parent_end, 1, 2)
os.waitpid(pid, 0)  # the peer of both connections no longer exists


def request(fd, method, target):
    s = socket.socket(fileno=fd)
    s.sendall(f"{method} {target} HTTP/1.1\r\nHost: am\r\nConnection: close\r\n"
              "Content-Length: 0\r\n\r\n".encode())
    answer = b""
    while chunk := s.recv(4096):
        answer += chunk
    return answer.split(b"\r\n", 1)[0].decode()


attempt("list", lambda: request(fds[0], "GET", "/v1/agents"))
attempt("revoke", lambda: request(fds[1], "DELETE", f"/v1/tasks/{victim}"))
