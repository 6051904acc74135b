//! How engines ran, as results record it: the kinds of runtime (`native`, `podman`, `docker`),
//! a target's [`RanUnder`] (its kind and a note: a fallback's reason, a prebuilt image's
//! labels) and a run's [`Runtimes`]. All are written as the text people read (`podman`,
//! `native (fallback: …)`, `native,podman`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// How engines are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeKind {
    Native,
    Podman,
    Docker,
}

impl RuntimeKind {
    pub const ALL: [RuntimeKind; 3] = [
        RuntimeKind::Native,
        RuntimeKind::Podman,
        RuntimeKind::Docker,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Native => "native",
            RuntimeKind::Podman => "podman",
            RuntimeKind::Docker => "docker",
        }
    }

    pub fn from_name(name: &str) -> Option<RuntimeKind> {
        RuntimeKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn is_container(self) -> bool {
        self != RuntimeKind::Native
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How one target ran: `podman`, or `native (fallback: why)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct RanUnder {
    pub kind: RuntimeKind,
    /// Said in parentheses after the kind: why it fell back, or which prebuilt image it is.
    pub note: Option<String>,
}

impl RanUnder {
    pub fn plain(kind: RuntimeKind) -> RanUnder {
        RanUnder { kind, note: None }
    }

    pub fn noted(kind: RuntimeKind, note: impl Into<String>) -> RanUnder {
        RanUnder {
            kind,
            note: Some(note.into()),
        }
    }
}

impl fmt::Display for RanUnder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.note {
            Some(n) => write!(f, "{} ({n})", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl From<RanUnder> for String {
    fn from(r: RanUnder) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for RanUnder {
    type Error = String;

    fn try_from(text: String) -> Result<RanUnder, String> {
        let (kind, note) = match text.split_once(" (") {
            Some((k, rest)) => match rest.strip_suffix(')') {
                Some(n) => (k, Some(n.to_string())),
                None => return Err(bad(&text)),
            },
            None => (text.as_str(), None),
        };
        let kind = RuntimeKind::from_name(kind).ok_or_else(|| bad(&text))?;
        Ok(RanUnder { kind, note })
    }
}

fn bad(text: &str) -> String {
    format!("runtime `{text}`: expected native, podman or docker, optionally with a note in parentheses")
}

/// The runtimes a run's targets ran under: `native`, or `native,podman` when runtimes were
/// compared side by side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Runtimes(pub Vec<RuntimeKind>);

impl fmt::Display for Runtimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|k| k.name()).collect();
        f.write_str(&names.join(","))
    }
}

impl From<Runtimes> for String {
    fn from(r: Runtimes) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for Runtimes {
    type Error = String;

    fn try_from(text: String) -> Result<Runtimes, String> {
        text.split(',')
            .map(|n| RuntimeKind::from_name(n).ok_or_else(|| bad(&text)))
            .collect::<Result<Vec<_>, _>>()
            .map(Runtimes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_are_written_and_read_as_their_text() {
        for text in [
            "podman",
            "native",
            "native (fallback: no podman image for the Python engine; its pinned environment runs on the host)",
            "podman (prebuilt image x:1 (tag): revision r; the engine is the image's)",
        ] {
            let r = RanUnder::try_from(text.to_string()).unwrap();
            assert_eq!(r.to_string(), text);
        }
        assert_eq!(
            RanUnder::try_from("native (fallback: x)".to_string()).unwrap(),
            RanUnder::noted(RuntimeKind::Native, "fallback: x")
        );
        assert!(RanUnder::try_from("lxc".to_string()).is_err());
        assert!(RanUnder::try_from("native (open".to_string()).is_err());
        let r = Runtimes::try_from("native,podman".to_string()).unwrap();
        assert_eq!(r.0, [RuntimeKind::Native, RuntimeKind::Podman]);
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"native,podman\"");
        assert!(Runtimes::try_from("native,".to_string()).is_err());
    }
}
