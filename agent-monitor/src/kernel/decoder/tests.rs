use std::mem::zeroed;

use agent_monitor_common::{PATH_LEN, kind};

use super::*;

fn bytes_of<T>(v: &T) -> Vec<u8> {
    // SAFETY: reading the bytes of a plain #[repr(C)] value for the test.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

fn file_event(p: &[u8]) -> FileEvent {
    // SAFETY: all-zero is a valid FileEvent (integers and byte arrays).
    let mut e: FileEvent = unsafe { zeroed() };
    e.header.kind = kind::FILE;
    e.header.agent = 7;
    e.header.pid = 11;
    e.header.tgid = 10;
    e.header.comm[..3].copy_from_slice(b"cat");
    e.op = file_op::OPEN;
    e.open_flags = 0o1;
    e.dirfd = -100;
    e.ret = 3;
    e.path[..p.len()].copy_from_slice(p);
    e
}

#[test]
fn decodes_a_file_event() {
    let buf = bytes_of(&file_event(b"/etc/hosts"));
    let Event::File {
        header,
        op,
        path,
        dirfd,
        ret,
        ..
    } = decode(&buf).expect("decodes")
    else {
        panic!("not a file event")
    };
    assert_eq!((header.agent, header.pid, header.tgid), (7, 11, 10));
    assert_eq!(header.comm, "cat");
    assert_eq!(
        op,
        FileOp::Open {
            flags: 1,
            in_root: false
        }
    );
    assert_eq!(path, PathBuf::from("/etc/hosts"));
    assert_eq!((dirfd, ret), (-100, 3));
}

#[test]
fn short_records_are_errors() {
    let buf = bytes_of(&file_event(b"/x"));
    assert!(matches!(
        decode(&buf[..20]),
        Err(DecodeError::Short {
            what: "event header",
            ..
        })
    ));
    assert!(matches!(
        decode(&buf[..FILE_EVENT_NO_PATHS - 1]),
        Err(DecodeError::Short {
            what: "file event",
            ..
        })
    ));
}

#[test]
fn file_events_without_their_unused_paths_decode_with_empty_ones() {
    let mut e = file_event(b"/etc/hosts");
    e.path2[..4].copy_from_slice(b"/old");
    let buf = bytes_of(&e);
    let paths = |len: usize| match decode(&buf[..len]).expect("decodes") {
        Event::File { path, path2, .. } => (path, path2),
        other => panic!("not a file event: {other:?}"),
    };
    let empty = PathBuf::new();
    assert_eq!(
        paths(agent_monitor_common::FILE_EVENT_ONE_PATH),
        (PathBuf::from("/etc/hosts"), empty.clone())
    );
    assert_eq!(paths(FILE_EVENT_NO_PATHS), (empty.clone(), empty));
    assert_eq!(paths(buf.len()).1, PathBuf::from("/old"));
}

#[test]
fn unknown_kind_and_op_are_errors() {
    let mut e = file_event(b"/x");
    e.op = 99;
    assert_eq!(
        decode(&bytes_of(&e)).err(),
        Some(DecodeError::UnknownValue {
            what: "file op",
            value: 99
        })
    );
    e.header.kind = 1234;
    assert_eq!(
        decode(&bytes_of(&e)).err(),
        Some(DecodeError::UnknownKind(1234))
    );
}

#[test]
fn unterminated_path_is_kept_whole() {
    let e = file_event(&[b'a'; PATH_LEN]);
    let Ok(Event::File { path, .. }) = decode(&bytes_of(&e)) else {
        panic!("decodes")
    };
    assert_eq!(path.as_os_str().len(), PATH_LEN);
}

#[test]
fn decodes_escape_events() {
    // SAFETY: all-zero is a valid EscapeEvent.
    let mut e: EscapeEvent = unsafe { zeroed() };
    e.header.kind = kind::ESCAPE;
    e.header.flags = flags::BLOCKED;
    e.op = escape_op::SYSCALL;
    e.nr = 321;
    e.ret = -1;
    let Ok(Event::Escape { header, what }) = decode(&bytes_of(&e)) else {
        panic!("decodes")
    };
    assert!(header.kernel.blocked);
    assert_eq!(
        what,
        EscapeWhat::Syscall {
            nr: 321,
            args: None,
            ret: -1
        },
        "no entry seen: no arguments"
    );
    e.op = escape_op::CGROUP_MOVE;
    e.target = 42;
    e.outside = 1;
    e.path[..4].copy_from_slice(b"/elb");
    let Ok(Event::Escape { what, .. }) = decode(&bytes_of(&e)) else {
        panic!("decodes")
    };
    assert_eq!(
        what,
        EscapeWhat::CgroupMove {
            moved: 42,
            cgroup_id: 0,
            path: "/elb".into(),
            outside: true
        }
    );
    e.op = 9;
    assert!(decode(&bytes_of(&e)).is_err());
}

#[test]
fn decodes_ipv4_and_ipv6_net_events() {
    // SAFETY: all-zero is a valid NetEvent.
    let mut e: NetEvent = unsafe { zeroed() };
    e.header.kind = kind::NET;
    e.op = net_op::CONNECT;
    e.family = 2;
    e.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    e.port = 8080;
    e.protocol = 6;
    let Ok(Event::Net {
        addr,
        port,
        protocol,
        op,
        ..
    }) = decode(&bytes_of(&e))
    else {
        panic!()
    };
    assert_eq!(
        (addr, port, protocol, op),
        (IpAddr::from([127, 0, 0, 1]), 8080, 6, NetOp::Connect)
    );
    e.family = 10;
    e.addr = Ipv6Addr::LOCALHOST.octets();
    let Ok(Event::Net { addr, .. }) = decode(&bytes_of(&e)) else {
        panic!()
    };
    assert_eq!(addr, IpAddr::V6(Ipv6Addr::LOCALHOST));
    e.family = 1;
    assert!(decode(&bytes_of(&e)).is_err());
}
