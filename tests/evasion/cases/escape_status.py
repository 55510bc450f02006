# Technique: use the daemon's status socket from inside the agent: list the agents and
# revoke another task (DELETE /v1/tasks/ID).
# Stopped (intended): the socket is outside files.write (connect refused or killed), and
# the daemon refuses any request from a process inside an agent cgroup with 403 whatever
# its uid (SO_PEERCRED), and records it.
# ARGS: socket path, victim task id
path, victim = ARGS
def request(method, target):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(f"{method} {target} HTTP/1.1\r\nHost: am\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".encode())
    answer = b""
    while chunk := s.recv(4096):
        answer += chunk
    return answer.split(b"\r\n", 1)[0].decode()
attempt("list", lambda: request("GET", "/v1/agents"))
attempt("revoke", lambda: request("DELETE", f"/v1/tasks/{victim}"))
