# Technique: UDP datagrams to an out-of-scope port without connect(2): sendto, sendmsg and
# sendmmsg (several messages in one call), over IPv4, IPv6 loopback and IPv4-mapped IPv6.
# Stopped because the cgroup sendmsg4/sendmsg6 hooks run for every unconnected datagram
# (each message of a sendmmsg) and refuse it with EPERM.
# ARGS: port, technique (sendto | sendmsg | sendmmsg | v6 | mapped)
port, technique = int(ARGS[0]), ARGS[1]
payload = b"LEAKED-BYTES"
if technique in ("v6", "mapped"):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    host = "::1" if technique == "v6" else "::ffff:127.0.0.1"
    attempt("send", lambda: s.sendto(payload, (host, port)))
elif technique == "sendto":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attempt("send", lambda: s.sendto(payload, ("127.0.0.1", port)))
elif technique == "sendmsg":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attempt("send", lambda: s.sendmsg([payload], [], 0, ("127.0.0.1", port)))
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    class Msghdr(ctypes.Structure):
        _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                    ("iov", ctypes.POINTER(Iovec)), ("iovlen", ctypes.c_size_t),
                    ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                    ("flags", ctypes.c_int)]

    class Mmsghdr(ctypes.Structure):
        _fields_ = [("hdr", Msghdr), ("len", ctypes.c_uint)]

    sin = struct.pack("<HH4s8x", socket.AF_INET, socket.htons(port), socket.inet_aton("127.0.0.1"))
    name = ctypes.create_string_buffer(sin, len(sin))
    data = ctypes.create_string_buffer(payload, len(payload))
    iov = Iovec(ctypes.addressof(data), len(payload))
    msgs = (Mmsghdr * 3)()
    for m in msgs:
        m.hdr = Msghdr(ctypes.addressof(name), len(sin), ctypes.pointer(iov), 1, None, 0, 0)
    libc.sendmmsg.restype = ctypes.c_int
    attempt("send", lambda: check(libc.sendmmsg(s.fileno(), msgs, 3, 0)))
