//! Reading a part's TOML configuration, the way every part does it: read
//! the file, deserialize it into the part's raw struct (serde,
//! `deny_unknown_fields`), then validate it into the part's typed `Config`.
//! Every failure is a [`ConfigError`] that says which file, which key and
//! which line, so `tandem <part> check-config` points at the mistake.
//!
//! [`Text`] holds the text being validated and turns a dotted key
//! (`steering.mode`, `auth.keys[1].id`) into its line for the error.
//!
//! What it does not do: know any part's keys, or write configurations.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;

/// A configuration that could not be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is invalid or has unknown keys (the message has the line).
    #[error("{0}")]
    Parse(String),
    /// A value is out of range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    Invalid(Invalid),
}

/// A value that parses but cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The dotted key (`steering.mode`), empty when the error is about the
    /// file as a whole.
    pub key: String,
    /// The 1-based line of the key, when it is in the file.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.key.is_empty(), self.line) {
            (true, _) => f.write_str(&self.message),
            (false, Some(line)) => write!(f, "line {line}, {}: {}", self.key, self.message),
            (false, None) => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

impl ConfigError {
    /// The invalid value's details, if that is what this is.
    pub fn invalid(&self) -> Option<&Invalid> {
        match self {
            Self::Invalid(i) => Some(i),
            _ => None,
        }
    }
}

/// Reads a configuration file.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The text of a configuration being validated.
pub struct Text<'a> {
    text: &'a str,
    doc: Option<toml_edit::Document<&'a str>>,
}

impl<'a> Text<'a> {
    /// Wraps the text (for line lookups; a text that does not parse has no
    /// lines to give, and [`Text::parse`] reports why).
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            doc: toml_edit::Document::parse(text).ok(),
        }
    }

    /// Deserializes the raw struct; unknown keys and wrong types name their
    /// line (toml's own message).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(self.text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// The 1-based line where a dotted key (`a.b`, `a.list[2].c`) is written.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let segs = segments(key)?;
        let span = walk_table(doc.as_table(), &segs)?;
        Some(self.line_at(span.start))
    }

    fn line_at(&self, offset: usize) -> usize {
        self.text
            .get(..offset)
            .map_or(0, |s| s.bytes().filter(|b| *b == b'\n').count())
            + 1
    }

    /// An invalid value at `key`, with its line.
    pub fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid(Invalid {
            key: key.to_string(),
            line: self.line_of(key),
            message: message.into(),
        })
    }
}

/// One step of a dotted key.
enum Seg<'k> {
    Key(&'k str),
    Index(usize),
}

fn segments(key: &str) -> Option<Vec<Seg<'_>>> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let mut rest = part;
        let name_end = rest.find('[').unwrap_or(rest.len());
        out.push(Seg::Key(&rest[..name_end]));
        rest = &rest[name_end..];
        while let Some(r) = rest.strip_prefix('[') {
            let (n, after) = r.split_once(']')?;
            out.push(Seg::Index(n.parse().ok()?));
            rest = after;
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(out)
}

type Span = std::ops::Range<usize>;

fn walk_table(t: &dyn toml_edit::TableLike, segs: &[Seg<'_>]) -> Option<Span> {
    let (Seg::Key(name), rest) = segs.split_first()? else {
        return None;
    };
    let (k, item) = t.get_key_value(name)?;
    if rest.is_empty() {
        return k.span();
    }
    walk_item(item, rest)
}

fn walk_item(item: &toml_edit::Item, segs: &[Seg<'_>]) -> Option<Span> {
    match (item, segs.first()?) {
        (toml_edit::Item::ArrayOfTables(a), Seg::Index(i)) => {
            let t = a.get(*i)?;
            match &segs[1..] {
                [] => t.span(),
                rest => walk_table(t, rest),
            }
        }
        (toml_edit::Item::Value(v), _) => walk_value(v, segs),
        (_, Seg::Key(_)) => walk_table(item.as_table_like()?, segs),
        _ => None,
    }
}

fn walk_value(v: &toml_edit::Value, segs: &[Seg<'_>]) -> Option<Span> {
    match segs.first()? {
        Seg::Index(i) => {
            let e = v.as_array()?.get(*i)?;
            match &segs[1..] {
                [] => e.span(),
                rest => walk_value(e, rest),
            }
        }
        Seg::Key(_) => walk_table(v.as_inline_table()?, segs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "listen = \"[::]:5124\"\n\n[steering]\nmode = \"prority\"\n\n[[auth.keys]]\nid = 1\n\n[[auth.keys]]\nid = 1\nsecret = \"x\"\n\n[links]\ndsl = [\"100.64.1.0/33\"]\nlte = [{ net = \"x\" }]\n";

    #[test]
    fn keys_are_found_on_their_line() {
        let t = Text::new(TEXT);
        assert_eq!(t.line_of("listen"), Some(1));
        assert_eq!(t.line_of("steering"), Some(3));
        assert_eq!(t.line_of("steering.mode"), Some(4));
        assert_eq!(t.line_of("auth.keys[0].id"), Some(7));
        assert_eq!(t.line_of("auth.keys[1].id"), Some(10));
        assert_eq!(t.line_of("auth.keys[1].secret"), Some(11));
        assert_eq!(t.line_of("links.dsl[0]"), Some(14));
        assert_eq!(t.line_of("links.lte[0].net"), Some(15));
        assert_eq!(t.line_of("nothing.here"), None);
        assert_eq!(t.line_of("auth.keys[7].id"), None);
    }

    #[test]
    fn invalid_names_key_and_line() {
        let t = Text::new(TEXT);
        let e = t.invalid("steering.mode", "unknown mode \"prority\"");
        assert_eq!(
            e.to_string(),
            "invalid configuration: line 4, steering.mode: unknown mode \"prority\""
        );
        assert_eq!(e.invalid().unwrap().line, Some(4));
        let e = t.invalid("", "no link configured");
        assert_eq!(e.to_string(), "invalid configuration: no link configured");
    }

    #[test]
    fn parse_errors_have_the_line_and_read_errors_the_path() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Raw {
            a: u32,
        }
        let e = Text::new("a = 1\nb = 2\n").parse::<Raw>().unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = read(Path::new("/nonexistent/tandem.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("reading /nonexistent/tandem.toml"),
            "{e}"
        );
        // A text that is not TOML has no lines, and says why when parsed.
        let t = Text::new("a = ");
        assert_eq!(t.line_of("a"), None);
        assert!(matches!(t.parse::<Raw>(), Err(ConfigError::Parse(_))));
    }
}
