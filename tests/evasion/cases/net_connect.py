# Technique: reach an out-of-scope TCP server by another spelling of its address: IPv6
# loopback, IPv4-mapped IPv6, the unspecified addresses (0.0.0.0 and :: reach local
# listeners), another loopback address (127.0.0.2), and TCP Fast Open (sendto with
# MSG_FASTOPEN carries data in the SYN, with no connect call at all).
# Stopped because the cgroup connect4/connect6 hooks see the kernel's destination (mapped
# addresses judged as IPv4) and refuse it with EPERM; Fast Open goes through the same
# connect hook.
# ARGS: port, technique (v6 | mapped | any4 | any6 | lo2 | fastopen)
port, technique = int(ARGS[0]), ARGS[1]
MSG_FASTOPEN = 0x20000000
dest = {
    "v6": (socket.AF_INET6, ("::1", port)),
    "mapped": (socket.AF_INET6, ("::ffff:127.0.0.1", port)),
    "any4": (socket.AF_INET, ("0.0.0.0", port)),
    "any6": (socket.AF_INET6, ("::", port)),
    "lo2": (socket.AF_INET, ("127.0.0.2", port)),
    "fastopen": (socket.AF_INET, ("127.0.0.1", port)),
}
family, addr = dest[technique]
s = socket.socket(family, socket.SOCK_STREAM)
if technique == "fastopen":
    attempt("send", lambda: s.sendto(b"LEAKED-BYTES", MSG_FASTOPEN, addr))
else:
    def go():
        s.connect(addr)
        return s.send(b"LEAKED-BYTES")
    attempt("send", go)
