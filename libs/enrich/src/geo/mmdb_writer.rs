//! A minimal MaxMind DB writer (IPv4 trees, 24-bit records), so the tests
//! build the databases they read instead of fetching any.

use std::path::Path;

pub enum Value {
    Str(String),
    Double(f64),
    Float(f32),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(String, Value)>),
    Array(Vec<Value>),
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (first, extended) = if kind <= 7 {
        (kind << 5, None)
    } else {
        (0, Some(kind - 7))
    };
    let (low, extra): (u8, Vec<u8>) = match size {
        0..29 => (size as u8, vec![]),
        29..285 => (29, vec![(size - 29) as u8]),
        285..65821 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65821) as u32).to_be_bytes()[1..].to_vec()),
    };
    out.push(first | low);
    out.extend(extended);
    out.extend(extra);
}

fn unsigned(out: &mut Vec<u8>, kind: u8, value: u64, width: usize) {
    let bytes = value.to_be_bytes();
    let significant: Vec<u8> = bytes[8 - width..]
        .iter()
        .copied()
        .skip_while(|b| *b == 0)
        .collect();
    control(out, kind, significant.len());
    out.extend(significant);
}

fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Str(s) => {
            control(out, 2, s.len());
            out.extend(s.as_bytes());
        }
        Value::Double(d) => {
            control(out, 3, 8);
            out.extend(d.to_be_bytes());
        }
        Value::Float(f) => {
            control(out, 15, 4);
            out.extend(f.to_be_bytes());
        }
        Value::U16(v) => unsigned(out, 5, u64::from(*v), 2),
        Value::U32(v) => unsigned(out, 6, u64::from(*v), 4),
        Value::U64(v) => unsigned(out, 9, *v, 8),
        Value::Map(pairs) => {
            control(out, 7, pairs.len());
            for (k, v) in pairs {
                encode(&Value::Str(k.clone()), out);
                encode(v, out);
            }
        }
        Value::Array(items) => {
            control(out, 11, items.len());
            for item in items {
                encode(item, out);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Record {
    Empty,
    Node(usize),
    Data(usize),
}

/// Writes an IPv4 database mapping each `(network, prefix length)` to its record.
pub fn write_mmdb(
    path: &Path,
    ip_version: u16,
    database_type: &str,
    networks: &[([u8; 4], u8, Value)],
) -> std::io::Result<()> {
    let mut data = Vec::new();
    let mut nodes: Vec<[Record; 2]> = vec![[Record::Empty; 2]];
    for (network, prefix, value) in networks {
        let offset = data.len();
        encode(value, &mut data);
        let bits = u32::from_be_bytes(*network);
        let mut current = 0;
        for depth in 0..*prefix {
            let bit = ((bits >> (31 - depth)) & 1) as usize;
            if depth + 1 == *prefix {
                nodes[current][bit] = Record::Data(offset);
            } else if let Record::Node(next) = nodes[current][bit] {
                current = next;
            } else {
                nodes.push([Record::Empty; 2]);
                let next = nodes.len() - 1;
                nodes[current][bit] = Record::Node(next);
                current = next;
            }
        }
    }
    let node_count = nodes.len();
    let mut out = Vec::new();
    for node in &nodes {
        for record in node {
            let value = match *record {
                Record::Empty => node_count,
                Record::Node(n) => n,
                Record::Data(offset) => node_count + 16 + offset,
            };
            out.extend(&(value as u32).to_be_bytes()[1..]);
        }
    }
    out.extend([0u8; 16]);
    out.extend(&data);
    out.extend(b"\xAB\xCD\xEFMaxMind.com");
    let metadata = Value::Map(vec![
        ("binary_format_major_version".into(), Value::U16(2)),
        ("binary_format_minor_version".into(), Value::U16(0)),
        ("build_epoch".into(), Value::U64(1_767_225_600)),
        ("database_type".into(), Value::Str(database_type.into())),
        (
            "description".into(),
            Value::Map(vec![("en".into(), Value::Str("test database".into()))]),
        ),
        ("ip_version".into(), Value::U16(ip_version)),
        (
            "languages".into(),
            Value::Array(vec![Value::Str("en".into())]),
        ),
        ("node_count".into(), Value::U32(node_count as u32)),
        ("record_size".into(), Value::U16(24)),
    ]);
    encode(&metadata, &mut out);
    std::fs::write(path, out)
}
