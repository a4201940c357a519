//! The error of a typed conversion while it unwinds, collecting the path of
//! the value that failed.

use std::fmt;

use facsimile_core::Value as CoreValue;
use smol_str::SmolStr;

use crate::error::Error;

/// One step of a path: a map key (or struct field) or an array index.
#[derive(Clone, Debug)]
pub(crate) enum Seg {
    Key(SmolStr),
    Index(usize),
}

/// A conversion error. The path is collected innermost first as the error
/// propagates out of nested values (the approach of `serde_path_to_error`),
/// so serde visitors that know nothing of paths still get one.
#[derive(Debug)]
pub(crate) struct ConvError {
    rev_path: Vec<Seg>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Type { expected: String, found: String },
    Message(String),
    Store(Error),
}

impl ConvError {
    pub(crate) fn mismatch(expected: impl fmt::Display, found: impl Into<String>) -> Self {
        ConvError {
            rev_path: Vec::new(),
            kind: Kind::Type {
                expected: expected.to_string(),
                found: found.into(),
            },
        }
    }

    pub(crate) fn message(m: impl fmt::Display) -> Self {
        ConvError {
            rev_path: Vec::new(),
            kind: Kind::Message(m.to_string()),
        }
    }

    pub(crate) fn store(e: Error) -> Self {
        ConvError {
            rev_path: Vec::new(),
            kind: Kind::Store(e),
        }
    }

    /// Adds the step through which the error propagates.
    pub(crate) fn at(mut self, seg: Seg) -> Self {
        if !matches!(self.kind, Kind::Store(_)) {
            self.rev_path.push(seg);
        }
        self
    }

    pub(crate) fn at_key(self, key: &str) -> Self {
        self.at(Seg::Key(key.into()))
    }

    pub(crate) fn at_index(self, index: usize) -> Self {
        self.at(Seg::Index(index))
    }

    pub(crate) fn into_error(self) -> Error {
        let path = pointer(self.rev_path.iter().rev());
        match self.kind {
            Kind::Type { expected, found } => Error::Type {
                path,
                expected,
                found,
            },
            Kind::Message(message) => Error::Convert { path, message },
            Kind::Store(e) => e,
        }
    }
}

impl From<ConvError> for Error {
    fn from(e: ConvError) -> Self {
        e.into_error()
    }
}

/// A JSON pointer (RFC 6901) for a path: `/players/3/score`, empty for the
/// value itself.
pub(crate) fn pointer<'a>(segs: impl Iterator<Item = &'a Seg>) -> String {
    let mut out = String::new();
    for s in segs {
        out.push('/');
        match s {
            Seg::Key(k) => out.push_str(&super::pointer::escape(k)),
            Seg::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

/// What a stored value is, in the words of a type error.
pub(crate) fn describe(v: &CoreValue, kind: Option<facsimile_core::ObjectKind>) -> &'static str {
    match v {
        CoreValue::Null => "null",
        CoreValue::Bool(_) => "boolean",
        CoreValue::Int(_) => "integer",
        CoreValue::Float(_) => "float",
        CoreValue::Str(_) => "string",
        CoreValue::Bytes(_) => "bytes",
        CoreValue::Ref(_) => match kind {
            Some(facsimile_core::ObjectKind::Map) => "map",
            Some(facsimile_core::ObjectKind::Array) => "array",
            None => "a reference to a missing object",
        },
    }
}

impl fmt::Display for ConvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = pointer(self.rev_path.iter().rev());
        match &self.kind {
            Kind::Type { expected, found } => {
                write!(f, "{path}: expected {expected}, found {found}")
            }
            Kind::Message(m) => write!(f, "{path}: {m}"),
            Kind::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ConvError {}

impl serde::de::Error for ConvError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ConvError::message(msg)
    }

    fn invalid_type(unexp: serde::de::Unexpected<'_>, exp: &dyn serde::de::Expected) -> Self {
        use serde::de::Unexpected as U;
        let found = match unexp {
            U::Bool(_) => "boolean".to_string(),
            U::Unsigned(_) | U::Signed(_) => "integer".to_string(),
            U::Float(_) => "float".to_string(),
            U::Char(_) | U::Str(_) => "string".to_string(),
            U::Bytes(_) => "bytes".to_string(),
            U::Unit => "null".to_string(),
            U::Option => "option".to_string(),
            U::NewtypeStruct => "newtype struct".to_string(),
            U::Seq => "array".to_string(),
            U::Map => "map".to_string(),
            U::Enum => "enum".to_string(),
            U::UnitVariant => "unit variant".to_string(),
            U::NewtypeVariant => "newtype variant".to_string(),
            U::TupleVariant => "tuple variant".to_string(),
            U::StructVariant => "struct variant".to_string(),
            U::Other(o) => o.to_string(),
        };
        ConvError::mismatch(exp, found)
    }
}

impl serde::ser::Error for ConvError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ConvError::message(msg)
    }
}
