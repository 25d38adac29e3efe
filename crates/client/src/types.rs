//! What the SDK hands out and takes: ids, roles, spaces, messages and files.
//!
//! Plain data, no I/O: every other module imports from here and this module
//! imports none of them (only the errors, [`crate::Error`]), so nothing circles.
//!
//! Ids are cheap `String` wrappers: [`SpaceId`], [`EventId`], [`FileId`] and
//! [`UserId`] tell apart what a call expects (a space, not an event) while
//! reading like strings: each has `as_str`, `Display`, `From<String>` and
//! `From<&str>`, derefs to `str`, and compares with `str` and `String`.

use std::borrow::Borrow;
use std::fmt;

use kms_protocol::uri::KmsUri;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as given (not checked: the core and the KMS check ids).
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id's `String`.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl From<&String> for $name {
            fn from(s: &String) -> Self {
                Self(s.clone())
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    };
}

id!(
    /// A space's id, as the core hands it out.
    SpaceId
);
id!(
    /// An event's id (a message, an edit, a reaction…), as the core hands it out.
    EventId
);
id!(
    /// A file's id, as the core hands it out.
    FileId
);
id!(
    /// A user (or service) id, `name@org`.
    UserId
);

/// A member's role in a space (the core's; the KMS knows no roles in spaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and writes.
    Member,
    /// Also adds and removes members and hides others' messages.
    Moderator,
}

impl Role {
    /// The core's name for it: `member` or `moderator`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Moderator => "moderator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = Error;

    /// `member` or `moderator`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "member" => Ok(Role::Member),
            "moderator" => Ok(Role::Moderator),
            other => Err(Error::Invalid(format!("{:?} is not a role (member or moderator)", other))),
        }
    }
}

/// A role as the core names it; anything else is an answer outside its API.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn core_role(s: &str) -> Result<Role> {
    s.parse().map_err(|_| Error::Core {
        status: 200,
        code: "bad_answer".into(),
        message: format!("the core names a role it does not have ({:?})", s),
    })
}

/// Someone in a space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Who.
    pub user: UserId,
    /// Their role.
    pub role: Role,
}

/// A space as the client sees it, after checking its sealed metadata.
#[derive(Debug, Clone)]
pub struct Space {
    /// Id.
    pub id: SpaceId,
    /// Its KMS resource (checked against the sealed metadata).
    pub resource: KmsUri,
    /// Decrypted title.
    pub title: String,
    /// Your role.
    pub role: Role,
    /// Members, in the order the core lists them.
    pub members: Vec<Member>,
    /// Latest sequence number.
    pub last_seq: i64,
}

/// One line of [`crate::Session::spaces`]: a space you are in, its title
/// decrypted and checked (or why it could not be), and where you are in it.
#[derive(Debug)]
pub struct SpaceSummary {
    /// Id.
    pub id: SpaceId,
    /// The title, or why it is unreadable (the space's metadata failed its checks).
    pub title: Result<String>,
    /// Your role.
    pub role: Role,
    /// Latest sequence number.
    pub last_seq: i64,
    /// Your read marker.
    pub read_seq: i64,
}

impl SpaceSummary {
    /// Events after your read marker.
    pub fn unread(&self) -> i64 {
        (self.last_seq - self.read_seq).max(0)
    }
}

/// A decrypted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The space.
    pub space_id: SpaceId,
    /// Sequence number.
    pub seq: i64,
    /// Event id.
    pub id: EventId,
    /// Who sent it (checked against the sealed sender where there is content).
    pub sender: UserId,
    /// The core's storage time (ms).
    pub stored_at: i64,
    /// Thread parent.
    pub parent: Option<EventId>,
    /// The event acted on (edits, deletions, reactions, files).
    pub target: Option<EventId>,
    /// The KMS key its content is under, if it has content.
    pub key_uri: Option<String>,
    /// What it says.
    pub content: Content,
}

/// What an event says, decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A message (or a reply when `parent` is set).
    Text(String),
    /// A new version of `target`.
    Edit(String),
    /// `target` was deleted.
    Deleted,
    /// A reaction to `target`.
    Reaction(String),
    /// The title changed.
    Title(String),
    /// Someone joined.
    MemberAdded {
        /// Who.
        user: UserId,
    },
    /// Someone left or was removed.
    MemberRemoved {
        /// Who.
        user: UserId,
    },
    /// File `target` finished uploading.
    FileReady,
    /// Could not be read: why (not authorized for its key, tampered, …).
    Unreadable(String),
}

/// A file's decrypted metadata.
#[derive(Debug, Clone)]
pub struct FileInfo {
    /// Id.
    pub id: FileId,
    /// Its space.
    pub space_id: SpaceId,
    /// Who uploaded it (checked against the sealed sender).
    pub uploader: UserId,
    /// Name.
    pub name: String,
    /// Plaintext size.
    pub size: u64,
    /// Upload finished.
    pub ready: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_like_strings() {
        let s = SpaceId::from("s-1");
        assert_eq!(s, "s-1");
        assert_eq!("s-1", s);
        assert_eq!(s.as_str(), "s-1");
        assert_eq!(s.to_string(), "s-1");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"s-1\"");
        let m: std::collections::HashMap<SpaceId, i64> = [(s.clone(), 1)].into();
        assert_eq!(m.get("s-1"), Some(&1));
        assert_eq!(serde_json::to_string(&m).unwrap(), "{\"s-1\":1}");
    }

    #[test]
    fn roles_are_the_cores_names() {
        for r in [Role::Member, Role::Moderator] {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert!("owner".parse::<Role>().is_err());
        assert!(matches!(core_role("owner"), Err(Error::Core { .. })));
    }
}
