# Technique: a Unix-domain socket outside the scope (a stand-in for a container runtime's
# socket): connect to a stream socket and write to it, or sendto a datagram socket without
# connecting. No IP address is involved, so no sock_addr hook applies.
# Stopped because connecting to a socket path needs files.write on that path: the connect is
# held until the daemon judged the path, and the process is killed before a byte moves. A
# datagram is delivered by the sendto that names its path, before any hook could judge it:
# the exec seccomp filter refuses Unix datagram sockets (EPERM) instead.
# ARGS: path, technique (stream | dgram)
path, technique = ARGS
if technique == "stream":
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    def go():
        s.connect(path)
        return s.send(b"LEAKED-BYTES")
    attempt("send", go)
else:
    attempt("send", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"LEAKED-BYTES", path))
