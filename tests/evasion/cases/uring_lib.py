# A minimal io_uring driver over raw syscalls (prepended to the uring cases): one ring,
# one request at a time. io_uring requests are executed by the kernel (inline or in io-wq
# worker threads) without the syscall tracepoints of open/connect/write ever firing.
import mmap

IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000
IORING_ENTER_GETEVENTS = 1
OP_CONNECT, OP_OPENAT, OP_READ, OP_WRITE, OP_SEND = 16, 18, 22, 23, 26


class Ring:
    def __init__(self):
        params = ctypes.create_string_buffer(120)
        self.fd = sys_call(SYS_IO_URING_SETUP, ctypes.c_uint(4), params)
        p = params.raw
        self.sq_entries, self.cq_entries = struct.unpack_from("<II", p, 0)
        sq = struct.unpack_from("<7I", p, 40)  # head tail mask entries flags dropped array
        cq = struct.unpack_from("<6I", p, 80)  # head tail mask entries overflow cqes
        self.sq_off, self.cq_off = sq, cq
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        self.sq = mmap.mmap(self.fd, sq[6] + self.sq_entries * 4, mmap.MAP_SHARED, prot,
                            offset=IORING_OFF_SQ_RING)
        self.cq = mmap.mmap(self.fd, cq[5] + self.cq_entries * 16, mmap.MAP_SHARED, prot,
                            offset=IORING_OFF_CQ_RING)
        self.sqes = mmap.mmap(self.fd, self.sq_entries * 64, mmap.MAP_SHARED, prot,
                              offset=IORING_OFF_SQES)
        self.keep = []

    def run(self, opcode, fd=0, off=0, addr=0, length=0, op_flags=0):
        """Submits one request, waits for it, returns its result (raises on error)."""
        head, tail, mask = (struct.unpack_from("<I", self.sq, o)[0] for o in self.sq_off[:3])
        mask = struct.unpack_from("<I", self.sq, self.sq_off[2])[0]
        idx = tail & mask
        sqe = struct.pack("<BBHiQQIIQHHiQQ", opcode, 0, 0, fd, off & (2**64 - 1), addr, length,
                          op_flags, 0xABCD, 0, 0, 0, 0, 0)
        self.sqes[idx * 64:idx * 64 + 64] = sqe
        struct.pack_into("<I", self.sq, self.sq_off[6] + idx * 4, idx)
        struct.pack_into("<I", self.sq, self.sq_off[1], tail + 1)
        sys_call(SYS_IO_URING_ENTER, ctypes.c_uint(self.fd), ctypes.c_uint(1), ctypes.c_uint(1),
                 ctypes.c_uint(IORING_ENTER_GETEVENTS), ctypes.c_void_p(0), ctypes.c_size_t(0))
        chead = struct.unpack_from("<I", self.cq, self.cq_off[0])[0]
        cmask = struct.unpack_from("<I", self.cq, self.cq_off[2])[0]
        _, res, _ = struct.unpack_from("<QiI", self.cq, self.cq_off[5] + (chead & cmask) * 16)
        struct.pack_into("<I", self.cq, self.cq_off[0], chead + 1)
        if res < 0:
            raise OSError(-res, os.strerror(-res))
        return res

    def buf(self, data_or_size):
        b = ctypes.create_string_buffer(data_or_size)
        self.keep.append(b)
        return b

    def openat(self, path, flags, mode=0o644):
        p = self.buf(os.fsencode(path))
        return self.run(OP_OPENAT, fd=AT_FDCWD, addr=ctypes.addressof(p), length=mode,
                        op_flags=flags)

    def read(self, fd, size=4096):
        b = self.buf(size)
        n = self.run(OP_READ, fd=fd, addr=ctypes.addressof(b), length=size)
        return b.raw[:n]

    def write(self, fd, data):
        b = self.buf(data)
        return self.run(OP_WRITE, fd=fd, addr=ctypes.addressof(b), length=len(data))

    def connect(self, fd, sockaddr):
        a = self.buf(sockaddr)
        return self.run(OP_CONNECT, fd=fd, addr=ctypes.addressof(a), off=len(sockaddr))

    def send(self, fd, data):
        b = self.buf(data)
        return self.run(OP_SEND, fd=fd, addr=ctypes.addressof(b), length=len(data))
