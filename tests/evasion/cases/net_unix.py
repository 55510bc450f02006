# Technique: a Unix-domain socket outside the scope (a stand-in for a container runtime's
# socket): connect to a stream socket and write to it, or sendto a datagram socket without
# connecting. No IP address is involved, so no sock_addr hook applies.
# Stopped (intended) because connecting or sending to a socket path needs files.write on
# that path: refused with EPERM or the process killed before a byte reaches the server.
# ARGS: path, technique (stream | dgram)
path, technique = ARGS
if technique == "stream":
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    def go():
        s.connect(path)
        return s.send(b"LEAKED-BYTES")
    attempt("send", go)
else:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    attempt("send", lambda: s.sendto(b"LEAKED-BYTES", path))
