//! Structure member offsets from the running kernel's BTF (/sys/kernel/btf/vmlinux), so the
//! kernel programs can follow task -> open file -> inode on any kernel without a rebuild.
//! Only what that needs is parsed: the type section's structs and unions, and strings.

use std::{collections::HashMap, fs, io, path::Path};

use agent_monitor_common::Offsets;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("BTF has no struct {0}")]
    NoStruct(String),
    #[error("BTF struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
enum Type {
    Composite {
        members: Vec<Member>,
    },
    /// Modifiers and typedefs that point at another type.
    Ref(u32),
    Array {
        nelems: u32,
    },
    Other,
}

pub(crate) struct Btf {
    types: Vec<Type>,
    /// name -> type ids of structs with that name.
    structs: HashMap<String, Vec<u32>>,
    strings: Vec<u8>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    let bytes = data
        .get(at..at + 4)
        .ok_or(BtfError::Malformed("truncated"))?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

impl Btf {
    pub(crate) fn from_sys_fs() -> Result<Self, BtfError> {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        let data = fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    pub(crate) fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let magic = u16::from_le_bytes([*data.first().unwrap_or(&0), *data.get(1).unwrap_or(&0)]);
        if magic != MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF?)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let types_data = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        // Type id 0 is void.
        let mut types = vec![Type::Other];
        let mut names = Vec::new();
        let mut at = 0;
        while at < types_data.len() {
            let name = u32_at(types_data, at)?;
            let info = u32_at(types_data, at + 4)?;
            let size_or_type = u32_at(types_data, at + 8)?;
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31;
            let extra = match kind {
                1 | 14 | 17 => 4,             // int, var, decl_tag
                3 => 12,                      // array
                4 | 5 | 15 | 19 => 12 * vlen, // struct, union, datasec, enum64
                6 | 13 => 8 * vlen,           // enum, func_proto
                _ => 0,
            };
            let ty = match kind {
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = at + 12 * i;
                        let offset = u32_at(types_data, m + 8)?;
                        members.push(Member {
                            name: u32_at(types_data, m)?,
                            type_id: u32_at(types_data, m + 4)?,
                            // With kind_flag, the high 8 bits hold a bitfield size.
                            bit_offset: if kind_flag == 1 {
                                offset & 0x00ff_ffff
                            } else {
                                offset
                            },
                        });
                    }
                    Type::Composite { members }
                }
                // typedef, volatile, const, restrict, type_tag
                8..=11 | 18 => Type::Ref(size_or_type),
                // `struct btf_array { type, index_type, nelems }`
                3 => Type::Array {
                    nelems: u32_at(types_data, at + 8)?,
                },
                _ => Type::Other,
            };
            if kind == KIND_STRUCT {
                names.push((name, u32::try_from(types.len()).unwrap_or(u32::MAX)));
            }
            types.push(ty);
            at += extra;
        }
        let mut btf = Self {
            types,
            structs: HashMap::new(),
            strings,
        };
        for (name, id) in names {
            let name = btf.string(name).to_string();
            btf.structs.entry(name).or_default().push(id);
        }
        Ok(btf)
    }

    fn string(&self, offset: u32) -> &str {
        let start = offset as usize;
        let bytes = self.strings.get(start..).unwrap_or_default();
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..end]).unwrap_or("")
    }

    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            match self.types.get(id as usize)? {
                Type::Ref(next) => id = *next,
                other => return Some(other),
            }
        }
        None
    }

    /// Byte offset of `member` in struct `strukt`, looking inside anonymous struct and
    /// union members (e.g. `mm_struct.exe_file` sits in an anonymous struct).
    pub(crate) fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let ids = self
            .structs
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_string()))?;
        ids.iter()
            .find_map(|id| self.find(*id, member, 0))
            .ok_or_else(|| BtfError::NoMember {
                strukt: strukt.to_string(),
                member: member.to_string(),
            })
    }

    /// How many elements the array member `member` of struct `strukt` has.
    pub(crate) fn member_len(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let no_member = || BtfError::NoMember {
            strukt: strukt.to_string(),
            member: member.to_string(),
        };
        let ids = self
            .structs
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_string()))?;
        let member_type = ids
            .iter()
            .find_map(|id| {
                let Type::Composite { members } = self.resolve(*id)? else {
                    return None;
                };
                members
                    .iter()
                    .find(|m| m.name != 0 && self.string(m.name) == member)
                    .map(|m| m.type_id)
            })
            .ok_or_else(no_member)?;
        match self.resolve(member_type) {
            Some(Type::Array { nelems }) => Ok(*nelems),
            _ => Err(no_member()),
        }
    }

    fn find(&self, id: u32, member: &str, base_bits: u32) -> Option<u32> {
        let Type::Composite { members } = self.resolve(id)? else {
            return None;
        };
        for m in members {
            if m.name != 0 && self.string(m.name) == member {
                return Some((base_bits + m.bit_offset) / 8);
            }
        }
        members
            .iter()
            .filter(|m| m.name == 0)
            .find_map(|m| self.find(m.type_id, member, base_bits + m.bit_offset))
    }

    /// The offsets the kernel programs need.
    pub(crate) fn offsets(&self) -> Result<Offsets, BtfError> {
        Ok(Offsets {
            task_files: self.member_offset("task_struct", "files")?,
            task_mm: self.member_offset("task_struct", "mm")?,
            files_fdt: self.member_offset("files_struct", "fdt")?,
            fdt_fd: self.member_offset("fdtable", "fd")?,
            file_inode: self.member_offset("file", "f_inode")?,
            inode_ino: self.member_offset("inode", "i_ino")?,
            inode_sb: self.member_offset("inode", "i_sb")?,
            sb_dev: self.member_offset("super_block", "s_dev")?,
            mm_exe_file: self.member_offset("mm_struct", "exe_file")?,
            files_fd_array: self.member_offset("files_struct", "fd_array")?,
            files_fd_array_len: self.member_len("files_struct", "fd_array")?,
            file_mode: self.member_offset("file", "f_mode")?,
            file_dentry: self.member_offset("file", "f_path")?
                + self.member_offset("path", "dentry")?,
            dentry_parent: self.member_offset("dentry", "d_parent")?,
            dentry_inode: self.member_offset("dentry", "d_inode")?,
            dentry_name: self.member_offset("dentry", "d_name")?
                + self.member_offset("qstr", "name")?,
            valid: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob: struct inner { int a; long b; }, struct outer { int x;
    /// <anonymous struct inner at byte 8>; }.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0inner\0a\0b\0outer\0x\0".to_vec();
        let s = |name: &str| -> u32 {
            let pos = strings.windows(name.len() + 2).position(|w| {
                w[0] == 0 && &w[1..=name.len()] == name.as_bytes() && w[name.len() + 1] == 0
            });
            u32::try_from(pos.expect("string") + 1).expect("fits")
        };
        let mut t = Vec::new();
        let mut push = |v: &[u32]| v.iter().for_each(|x| t.extend_from_slice(&x.to_le_bytes()));
        // 1: int
        push(&[s("int"), 1 << 24, 4, 0x20]);
        // 2: struct inner { a @0, b @64 bits }
        push(&[s("inner"), (4 << 24) | 2, 16, s("a"), 1, 0, s("b"), 1, 64]);
        // 3: struct outer { x @0, anon inner @64 bits }
        push(&[s("outer"), (4 << 24) | 2, 24, s("x"), 1, 0, 0, 2, 64]);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            u32::try_from(t.len()).expect("len"),
            u32::try_from(t.len()).expect("len"),
            u32::try_from(strings.len()).expect("len"),
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&t);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn finds_members_directly_and_through_anonymous_members() {
        let btf = Btf::parse(&blob()).expect("parses");
        assert_eq!(btf.member_offset("inner", "b").expect("b"), 8);
        assert_eq!(btf.member_offset("outer", "x").expect("x"), 0);
        assert_eq!(btf.member_offset("outer", "b").expect("anon b"), 16);
        assert!(matches!(
            btf.member_offset("outer", "nope"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("nostruct", "x"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, clearly").is_err());
        assert!(Btf::parse(&[]).is_err());
    }

    /// Needs the host's kernel BTF (`/sys/kernel/btf/vmlinux`, `CONFIG_DEBUG_INFO_BTF=y`),
    /// which the daemon itself requires.
    #[test]
    fn host_kernel_btf_has_every_offset() {
        let btf = Btf::from_sys_fs()
            .expect("this test needs /sys/kernel/btf/vmlinux (a kernel built with BTF)");
        let o = btf.offsets().expect("offsets");
        assert_eq!(o.valid, 1);
        assert!(o.task_files > 0 && o.task_mm > 0 && o.mm_exe_file > 0 && o.inode_sb > 0);
        assert_ne!(o.inode_ino, o.inode_sb);
        // `struct path { vfsmount *mnt; dentry *dentry; }` and `qstr { u64 hash_len; name }`.
        assert!(o.file_dentry >= 8 && o.dentry_parent > 0 && o.dentry_inode > 0);
        assert_eq!(o.dentry_name % 8, 0);
        assert_ne!(o.dentry_parent, o.dentry_inode);
        // `NR_OPEN_DEFAULT` is `BITS_PER_LONG`.
        assert_eq!(o.files_fd_array_len, 64);
        assert!(o.files_fd_array > o.files_fdt);
    }
}
