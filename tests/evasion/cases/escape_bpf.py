# Technique: use bpf(2) directly: create a map (any BPF use), or take the daemon's pinned
# maps (BPF_OBJ_GET on its bpffs pins) and empty them (untag the agent, lift the deny
# list), then read the denied file.
# Stopped (intended) because bpf(2) fails with EPERM for an agent (seccomp filter of
# `agent-monitor exec`), recorded as an escape naming bpf.
# ARGS: technique (create | untag), [pins dir, secret, map names...] (the names are in
# agent-monitor's source; listing bpffs would be a files.read violation of its own)
technique = ARGS[0]


def bpf(cmd, attr):
    return sys_call(SYS_BPF, ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))


if technique == "create":
    attr = ctypes.create_string_buffer(struct.pack("<IIII", 1, 4, 4, 1) + bytes(56))  # hash map
    attempt("bpf", lambda: bpf(0, attr))
else:
    pins, secret, names = ARGS[1], ARGS[2], ARGS[3:]

    def untag():
        emptied = []
        for name in names:
            path = ctypes.create_string_buffer(f"{pins}/maps/{name}".encode())
            fd = bpf(7, ctypes.create_string_buffer(struct.pack("<QIIi", ctypes.addressof(path), 0, 0, 0) + bytes(44)))
            info = ctypes.create_string_buffer(80)
            bpf(15, ctypes.create_string_buffer(struct.pack("<IIQ", fd, 80, ctypes.addressof(info)) + bytes(48)))
            key_size = struct.unpack_from("<I", info.raw, 8)[0]
            key = ctypes.create_string_buffer(max(key_size, 1))
            deleted = 0
            for _ in range(100000):
                r = libc.syscall(ctypes.c_long(SYS_BPF), ctypes.c_int(4), ctypes.create_string_buffer(
                    struct.pack("<IIQQQ", fd, 0, 0, ctypes.addressof(key), 0)), ctypes.c_uint(32))
                if r < 0:
                    break
                r = libc.syscall(ctypes.c_long(SYS_BPF), ctypes.c_int(3), ctypes.create_string_buffer(
                    struct.pack("<IIQQQ", fd, 0, ctypes.addressof(key), 0, 0)), ctypes.c_uint(32))
                if r < 0:
                    break
                deleted += 1
            emptied.append(f"{name}:{deleted}")
        return " ".join(emptied)

    attempt("bpf", untag)
    attempt("read", lambda: read_file(secret))
