# Technique: listen on a port outside network.bind: an explicit TCP bind, a UDP bind, an
# IPv6 bind, and listen(2) on an unbound socket (the kernel picks an ephemeral port: no
# bind call at all).
# Stopped because the cgroup bind4/bind6 hooks refuse ports outside the scope with EPERM;
# an autobind is held at listen's exit until the daemon judged the port the kernel picked,
# and killed before it accepts anything.
# ARGS: port, technique (tcp | udp | v6 | autobind)
port, technique = int(ARGS[0]), ARGS[1]
def listen(family, kind, addr):
    s = socket.socket(family, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if addr is not None:
        s.bind(addr)
    if kind == socket.SOCK_STREAM:
        s.listen()
    return f"listening on {s.getsockname()}"
if technique == "tcp":
    attempt("listen", lambda: listen(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", port)))
elif technique == "udp":
    attempt("listen", lambda: listen(socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", port)))
elif technique == "v6":
    attempt("listen", lambda: listen(socket.AF_INET6, socket.SOCK_STREAM, ("::", port)))
else:
    attempt("listen", lambda: listen(socket.AF_INET, socket.SOCK_STREAM, None))
