//! Just enough of a BTF reader to find struct member offsets in the running kernel.
//!
//! aya-ebpf programs get no CO-RE field relocations, and the structures the hooks read
//! (`linux_binprm`, `task_struct`, ...) change layout between kernel releases, so the
//! daemon reads the offsets from `/sys/kernel/btf/vmlinux` and hands them to the
//! programs before load.
use std::collections::HashMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("not BTF data (bad magic or truncated header)")]
    BadHeader,
    #[error("BTF type section is truncated at type {0}")]
    Truncated(u32),
    #[error("unknown BTF kind {kind} at type {id}")]
    UnknownKind { id: u32, kind: u32 },
    #[error("struct {0} not found in kernel BTF")]
    NoStruct(String),
    #[error("struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
    #[error("enumerator {0} not found in kernel BTF")]
    NoEnumerator(String),
    #[error("{strukt}.{member} is a bitfield")]
    Bitfield { strukt: String, member: String },
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;
const KIND_MAX: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    ty: u32,
    bit_offset: u32,
    bitfield: bool,
}

#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name: u32,
    /// `type` for modifiers and typedefs.
    ty: u32,
    members: Vec<Member>,
}

/// Parsed kernel BTF: only what member lookups need.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs_by_name: HashMap<String, u32>,
    /// Enumerators of every (32-bit) enum: C gives them one namespace.
    enumerators: HashMap<String, i32>,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

impl Btf {
    /// The running kernel's BTF.
    pub fn from_sys_fs() -> std::io::Result<Result<Self, BtfError>> {
        std::fs::read("/sys/kernel/btf/vmlinux").map(|d| Self::parse(&d))
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.len() < 24 || u16::from_ne_bytes([data[0], data[1]]) != 0xeb9f {
            return Err(BtfError::BadHeader);
        }
        let field = |at| u32_at(data, at).ok_or(BtfError::BadHeader);
        let hdr_len = field(4)? as usize;
        let (type_off, type_len) = (field(8)? as usize, field(12)? as usize);
        let (str_off, str_len) = (field(16)? as usize, field(20)? as usize);
        let types_data = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::BadHeader)?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::BadHeader)?
            .to_vec();

        // Type id 0 is void.
        let mut types = vec![Type {
            kind: 0,
            name: 0,
            ty: 0,
            members: Vec::new(),
        }];
        let mut enumerators = Vec::new();
        let mut at = 0;
        while at < types_data.len() {
            let id = types.len() as u32;
            let rd = |o: usize| u32_at(types_data, o).ok_or(BtfError::Truncated(id));
            let name = rd(at)?;
            let info = rd(at + 4)?;
            let size_or_type = rd(at + 8)?;
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = rd(m + 8)?;
                        members.push(Member {
                            name: rd(m)?,
                            ty: rd(m + 4)?,
                            bit_offset: if kind_flag {
                                offset & 0xff_ffff
                            } else {
                                offset
                            },
                            bitfield: kind_flag && offset >> 24 != 0,
                        });
                    }
                    12 * vlen
                }
                KIND_ENUM => {
                    for i in 0..vlen {
                        let e = at + i * 8;
                        enumerators.push((rd(e)?, rd(e + 4)? as i32));
                    }
                    8 * vlen
                }
                KIND_FUNC_PROTO => 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                k if k <= KIND_MAX && k != 0 => 0,
                k => return Err(BtfError::UnknownKind { id, kind: k }),
            };
            at += extra;
            if at > types_data.len() {
                return Err(BtfError::Truncated(id));
            }
            types.push(Type {
                kind,
                name,
                ty: size_or_type,
                members,
            });
        }

        let mut btf = Self {
            types,
            strings,
            structs_by_name: HashMap::new(),
            enumerators: HashMap::new(),
        };
        for (name, value) in enumerators {
            let name = btf.name(name).to_owned();
            btf.enumerators.entry(name).or_insert(value);
        }
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name != 0 {
                let name = btf.name(t.name).to_owned();
                btf.structs_by_name.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or_default()
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.ty;
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Bit offset of `member` within `t`, looking into anonymous structs and unions.
    fn find_member(&self, t: &Type, member: &str) -> Option<(u32, bool)> {
        for m in &t.members {
            if m.name != 0 {
                if self.name(m.name) == member {
                    return Some((m.bit_offset, m.bitfield));
                }
            } else if let Some(inner) = self.resolve(m.ty)
                && matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                && let Some((off, bf)) = self.find_member(inner, member)
            {
                return Some((m.bit_offset + off, bf));
            }
        }
        None
    }

    /// The value of the enumerator `name` (e.g. `ITER_UBUF`).
    pub fn enum_value(&self, name: &str) -> Result<i32, BtfError> {
        self.enumerators
            .get(name)
            .copied()
            .ok_or_else(|| BtfError::NoEnumerator(name.to_owned()))
    }

    /// Byte offset of `strukt.member`.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        let t = &self.types[id as usize];
        let (bits, bitfield) = self
            .find_member(t, member)
            .ok_or_else(|| BtfError::NoMember {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
            })?;
        if bitfield || bits % 8 != 0 {
            return Err(BtfError::Bitfield {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
            });
        }
        Ok(bits / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob: `struct outer { int a; union { int b; long c; }; int d; }` and
    /// `enum kinds { K_ONE = 1, K_NEG = -2 }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0d\0long\0kinds\0K_ONE\0K_NEG\0".to_vec();
        let s = |name: &str| {
            let pat = format!("\0{name}\0");
            strings
                .windows(pat.len())
                .position(|w| w == pat.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_ne_bytes());
            }
        };
        // 1: int
        push(&[s("int"), KIND_INT << 24, 4, 32]);
        // 2: long
        push(&[s("long"), KIND_INT << 24, 8, 64]);
        // 3: anonymous union { int b; long c; }
        push(&[0, (KIND_UNION << 24) | 2, 8]);
        push(&[s("b"), 1, 0, s("c"), 2, 0]);
        // 4: struct outer { int a; <union 3> at 64 bits; int d at 128 bits }
        push(&[s("outer"), (KIND_STRUCT << 24) | 3, 24]);
        push(&[s("a"), 1, 0, 0, 3, 64, s("d"), 1, 128]);
        // 5: enum kinds
        push(&[s("kinds"), (KIND_ENUM << 24) | 2, 4]);
        push(&[s("K_ONE"), 1, s("K_NEG"), (-2i32) as u32]);

        let mut blob = Vec::new();
        blob.extend_from_slice(&0xeb9f_u16.to_ne_bytes());
        blob.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&w.to_ne_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(&strings);
        blob
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("outer", "a"), Ok(0));
        assert_eq!(btf.member_offset("outer", "c"), Ok(8));
        assert_eq!(btf.member_offset("outer", "d"), Ok(16));
        assert_eq!(
            btf.member_offset("outer", "zz"),
            Err(BtfError::NoMember {
                strukt: "outer".into(),
                member: "zz".into()
            })
        );
        assert_eq!(
            btf.member_offset("inner", "a"),
            Err(BtfError::NoStruct("inner".into()))
        );
    }

    #[test]
    fn finds_enumerators() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.enum_value("K_ONE"), Ok(1));
        assert_eq!(btf.enum_value("K_NEG"), Ok(-2));
        assert_eq!(
            btf.enum_value("kinds"),
            Err(BtfError::NoEnumerator("kinds".into()))
        );
        // The struct after the enum still parses where it is.
        assert_eq!(btf.member_offset("outer", "d"), Ok(16));
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert_eq!(Btf::parse(b"hello").err(), Some(BtfError::BadHeader));
        let mut blob = sample();
        // Claim more type bytes than there are.
        let len = u32::from_ne_bytes(blob[12..16].try_into().unwrap());
        blob[12..16].copy_from_slice(&(len + 4).to_ne_bytes());
        assert!(Btf::parse(&blob).is_err());
    }

    #[test]
    fn reads_the_running_kernel() {
        // Every kernel belay supports has BTF; a host without it cannot run belay at all.
        let btf = Btf::from_sys_fs()
            .expect("/sys/kernel/btf/vmlinux")
            .expect("kernel BTF parses");
        let pid = btf.member_offset("task_struct", "pid").unwrap();
        let tgid = btf.member_offset("task_struct", "tgid").unwrap();
        assert_eq!(tgid, pid + 4, "pid_t pid; pid_t tgid; are adjacent");
        assert!(btf.member_offset("linux_binprm", "filename").is_ok());
    }
}
