//! JSON-aware mutations: structural (the document stays valid JSON and changes meaning) and
//! textual (the syntax breaks in the ways hand-edited or truncated files do).

use serde_json::{Map, Number, Value};

use super::SplitMix64;

/// The input as JSON when it is an object or array document.
pub(super) fn parse(bytes: &[u8]) -> Option<Value> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' && *first != b'[' {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

fn interesting_number(rng: &mut SplitMix64) -> Value {
    match rng.below(16) {
        0 => Value::from(0),
        1 => Value::from(-1),
        2 => Value::from(1),
        3 => Value::from(u32::MAX),
        4 => Value::from(u32::MAX as u64 + 1),
        5 => Value::from(u64::MAX),
        6 => Value::from(i64::MIN),
        7 => Value::from(i64::MAX),
        8 => Number::from_f64(1e308).map(Value::Number).unwrap(),
        9 => Number::from_f64(-1e308).map(Value::Number).unwrap(),
        10 => Number::from_f64(0.5).map(Value::Number).unwrap(),
        11 => Number::from_f64(1e-300).map(Value::Number).unwrap(),
        12 => Number::from_f64(-0.0).map(Value::Number).unwrap(),
        13 => Value::from(1u64 << 53 | 1),
        14 => Value::from(1u64 << 32),
        _ => Value::from(rng.next_u64() as i64 >> rng.below(64)),
    }
}

fn interesting_string(rng: &mut SplitMix64) -> Value {
    Value::from(odd_string(rng))
}

/// Strings that stand where a name, a label or a path was.
fn odd_string(rng: &mut SplitMix64) -> String {
    match rng.below(12) {
        0 => String::new(),
        1 => "a".repeat(1 + rng.below(4096)),
        2 => "../../etc/passwd".into(),
        3 => "/dev/zero".into(),
        4 => "é漢\u{1f600}".repeat(1 + rng.below(40)),
        5 => "\u{0}".into(),
        6 => "line\nbreak".into(),
        7 => "---\n".into(),
        8 => "x/../../y".into(),
        9 => " ".into(),
        10 => "NaN".into(),
        _ => format!("{}", rng.next_u64()),
    }
}

fn interesting(rng: &mut SplitMix64) -> Value {
    match rng.below(10) {
        0..=3 => interesting_number(rng),
        4..=5 => interesting_string(rng),
        6 => Value::Null,
        7 => Value::Bool(rng.one_in(2)),
        8 => Value::Array(vec![]),
        _ => Value::Object(Map::new()),
    }
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

/// The `k`-th node in depth-first order.
fn nth<'a>(v: &'a mut Value, k: &mut usize) -> Option<&'a mut Value> {
    if *k == 0 {
        return Some(v);
    }
    *k -= 1;
    match v {
        Value::Array(a) => a.iter_mut().find_map(|c| nth(c, k)),
        Value::Object(o) => o.values_mut().find_map(|c| nth(c, k)),
        _ => None,
    }
}

fn node<'a>(rng: &mut SplitMix64, v: &'a mut Value) -> &'a mut Value {
    let mut k = rng.below(count(v));
    nth(v, &mut k).expect("k is below the node count")
}

fn random_node(rng: &mut SplitMix64, v: &Value) -> Value {
    let mut copy = v.clone();
    node(rng, &mut copy).clone()
}

/// A number of the same kind (unsigned, negative, fractional) that stresses what reads it.
fn number_like(rng: &mut SplitMix64, x: &Number) -> Value {
    let f = x.as_f64().unwrap_or(0.0);
    if x.is_u64() && !rng.one_in(4) {
        let u = x.as_u64().unwrap_or(0);
        return Value::from(match rng.below(10) {
            0 => 0,
            1 => 1,
            2 => u.wrapping_add(1),
            3 => u.saturating_sub(1),
            4 => u.saturating_mul(2),
            5 => u / 2,
            6 => u32::MAX as u64,
            7 => u32::MAX as u64 + 1,
            8 => u64::MAX,
            _ => rng.next_u64() >> rng.below(64),
        });
    }
    let g = match rng.below(9) {
        0 => -f,
        1 => f * 2.0,
        2 => f + 1.0,
        3 => f * 1e6,
        4 => f / 1e6,
        5 => 0.0,
        6 => -0.0,
        7 => 1e308,
        _ => f.trunc() - 1.0,
    };
    Number::from_f64(g)
        .map(Value::Number)
        .unwrap_or_else(|| Value::from(0))
}

fn same_type(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// One structural mutation of `doc` (a clone), serialized compactly or pretty. Most keep each
/// node's JSON type (what gets past the parser into the code behind it); the rest do not.
pub(super) fn mutate_value(rng: &mut SplitMix64, doc: &Value, donors: &[&Value]) -> Vec<u8> {
    let mut v = doc.clone();
    for _ in 0..1 + rng.below(3) {
        let donor = |rng: &mut SplitMix64| {
            if donors.is_empty() || rng.one_in(2) {
                random_node(rng, doc)
            } else {
                let d = donors[rng.below(donors.len())];
                random_node(rng, d)
            }
        };
        let n = node(rng, &mut v);
        match rng.below(20) {
            // a node of the same type from this or another document
            0..=3 => {
                for _ in 0..16 {
                    let d = donor(rng);
                    if same_type(&d, n) {
                        *n = d;
                        break;
                    }
                }
            }
            // any other value
            4..=5 => *n = interesting(rng),
            6 => *n = donor(rng),
            7 => *n = Value::Array(vec![n.take()]),
            // the same type, changed
            _ => match n {
                Value::Number(x) => *n = number_like(rng, x),
                Value::String(_) => *n = interesting_string(rng),
                Value::Bool(b) => *b = !*b,
                Value::Array(a) if !a.is_empty() => match rng.below(5) {
                    0 => a.clear(),
                    1 => a.truncate(rng.below(a.len())),
                    2 => {
                        let i = rng.below(a.len());
                        a.remove(i);
                    }
                    3 => a.reverse(),
                    _ => {
                        let e = a[rng.below(a.len())].clone();
                        for _ in 0..1 + rng.below(64) {
                            a.push(e.clone());
                        }
                    }
                },
                Value::Object(o) if !o.is_empty() => {
                    let keys: Vec<String> = o.keys().cloned().collect();
                    let k = &keys[rng.below(keys.len())];
                    match rng.below(5) {
                        0 => {
                            o.remove(k);
                        }
                        1 => {
                            let val = o.remove(k).unwrap();
                            o.insert(format!("{k}_"), val);
                        }
                        2 => {
                            o.insert("unknown_field".into(), interesting(rng));
                        }
                        3 => {
                            // a key (a file name, a prompt, a metric) replaced by an odd one
                            let val = o.remove(k).unwrap();
                            o.insert(odd_string(rng), val);
                        }
                        _ => {
                            let other = &keys[rng.below(keys.len())];
                            let a = o[k].clone();
                            let b = o[other].clone();
                            o[k] = b;
                            o[other] = a;
                        }
                    }
                }
                _ => *n = interesting(rng),
            },
        }
    }
    if rng.one_in(2) {
        serde_json::to_vec_pretty(&v).expect("a Value serializes")
    } else {
        serde_json::to_vec(&v).expect("a Value serializes")
    }
}

/// Literals that stand where a number was.
const NUMBERS: [&str; 18] = [
    "0",
    "-1",
    "-0",
    "1e308",
    "1e309",
    "-1e309",
    "NaN",
    "Infinity",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "4294967296",
    "1.5",
    "1e-400",
    "123456789012345678901234567890",
    "null",
    "\"1\"",
    "0x10",
];

/// Literals that stand where a string was.
const STRINGS: [&str; 8] = [
    "\"\"",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "\"../../x\"",
    "\"/\"",
    "\"\\\"",
    "\"é\"",
    "null",
];

/// One textual mutation.
pub(super) fn mutate_text(rng: &mut SplitMix64, base: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    if out.is_empty() {
        return b"{".to_vec();
    }
    let len = out.len();
    let at = rng.below(len);
    match rng.below(8) {
        0 => {
            let n = 1 + rng.below(16.min(len - at));
            out.drain(at..at + n);
        }
        1 => {
            let c = *rng.pick(b"{}[],:\"\\-0");
            out.insert(at, c);
        }
        2 | 3 => {
            // A number token (digits, sign, point, exponent) replaced.
            let starts: Vec<usize> = (0..len)
                .filter(|&i| {
                    (out[i].is_ascii_digit() || out[i] == b'-')
                        && (i == 0 || !(out[i - 1].is_ascii_alphanumeric() || out[i - 1] == b'.'))
                })
                .collect();
            if let Some(&s) = (!starts.is_empty()).then(|| rng.pick(&starts)) {
                let mut e = s + 1;
                while e < len && (out[e].is_ascii_digit() || b".eE+-".contains(&out[e])) {
                    e += 1;
                }
                let lit = rng.pick(&NUMBERS).as_bytes().to_vec();
                out.splice(s..e, lit);
            }
        }
        4 => {
            // A string token replaced.
            let quotes: Vec<usize> = (0..len).filter(|&i| out[i] == b'"').collect();
            if quotes.len() >= 2 {
                let i = rng.below(quotes.len() / 2) * 2;
                let (s, e) = (quotes[i], quotes[i + 1] + 1);
                let lit = rng.pick(&STRINGS).as_bytes().to_vec();
                out.splice(s..e, lit);
            }
        }
        5 => {
            // Deep nesting where a value starts.
            let depth = *rng.pick(&[64, 127, 128, 129, 1000, 100_000]);
            let colon: Vec<usize> = (0..len).filter(|&i| out[i] == b':').collect();
            let s = if colon.is_empty() {
                at
            } else {
                rng.pick(&colon) + 1
            };
            let mut nest = vec![b'['; depth];
            nest.extend(std::iter::repeat_n(b']', depth));
            nest.push(b',');
            out.splice(s..s, nest);
        }
        6 => {
            let n = 1 + rng.below(256.min(len - at));
            let piece = out[at..at + n].to_vec();
            let to = rng.below(len + 1);
            out.splice(to..to, piece);
        }
        _ => out.truncate(at),
    }
    out
}
