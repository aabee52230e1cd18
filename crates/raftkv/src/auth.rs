//! Who may do what: users of the RESP port with a role and key patterns (in the spirit of Redis
//! ACLs), and the bearer token of the admin port's cluster changes.
//!
//! - Passwords are stored as argon2 PHC strings (`$argon2id$v=19$m=...`), never in plain text;
//!   `raftkv passwd` makes one. Verifying costs milliseconds of CPU on purpose, so the server
//!   does it on a blocking thread.
//! - The admin token is stored as `sha256:<64 hex digits>` of the token. A token is a long
//!   random string (not something a person remembers), so a fast hash is enough to keep the
//!   config file from holding it, and the comparison runs in constant time.
//!
//! | role | may |
//! | --- | --- |
//! | `read-only` | GET, MGET, EXISTS on keys matching its patterns |
//! | `read-write` | the above, and SET, SETNX, CAS, DEL, INCR/DECR[BY] on matching keys |
//! | `admin` | everything, on every key (its patterns are ignored), and INFO |
//!
//! Every authenticated user may also run the commands that touch no key: PING, ECHO, SELECT,
//! COMMAND, CONFIG GET, CLIENT SETNAME/GETNAME/SETINFO, QUIT. DBSIZE counts every key, so it
//! needs a pattern that matches every key (`*`). A command naming several keys (MGET, EXISTS,
//! DEL) needs every one of them allowed.

use crate::command::{Action, ReadOp};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use thiserror::Error;

/// The user `AUTH password` (one argument) logs in as, as in Redis.
pub const DEFAULT_USER: &str = "default";

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ReadOnly,
    ReadWrite,
    Admin,
}

/// A `[[users]]` table of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub name: String,
    /// An argon2 PHC string, as `raftkv passwd` prints.
    pub password_hash: String,
    pub role: Role,
    /// Key patterns (`*` any run of bytes, `?` one byte); none means no key. Ignored for admins.
    #[serde(default)]
    pub keys: Vec<String>,
}

/// Why a user or token setting cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("user '{user}': password_hash is not an argon2 PHC string ({reason}); make one with `raftkv passwd`")]
    BadPasswordHash { user: String, reason: String },
    #[error("user name '{0}' appears twice")]
    DuplicateUser(String),
    #[error("a user name must not be empty or contain spaces: '{0}'")]
    BadUserName(String),
    #[error("admin_token_hash must be sha256:<64 hex digits> (see `raftkv passwd --admin-token`)")]
    BadTokenHash,
    #[error("cannot hash the password: {0}")]
    Hashing(String),
    #[error("cannot read random bytes for a salt: {0}")]
    Random(String),
}

/// A validated user.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    password_hash: String,
    keys: Vec<Vec<u8>>,
}

/// Without the password hash: a configuration printed for debugging must not hand out material
/// for an offline guessing attack.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .field(
                "keys",
                &self
                    .keys
                    .iter()
                    .map(|k| String::from_utf8_lossy(k))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl User {
    /// Whether the user may touch `key`.
    pub fn may_access(&self, key: &[u8]) -> bool {
        self.role == Role::Admin || self.keys.iter().any(|pattern| glob_match(pattern, key))
    }

    fn may_access_all_keys(&self) -> bool {
        self.role == Role::Admin || self.keys.iter().any(|pattern| pattern == b"*")
    }
}

/// The users of a server, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    by_name: BTreeMap<String, Arc<User>>,
}

impl Users {
    /// Checks every spec (names, PHC strings) without verifying any password.
    pub fn from_specs(specs: &[UserSpec]) -> Result<Users, AuthError> {
        let mut by_name = BTreeMap::new();
        for spec in specs {
            if spec.name.is_empty() || spec.name.contains(char::is_whitespace) {
                return Err(AuthError::BadUserName(spec.name.clone()));
            }
            PasswordHash::new(&spec.password_hash).map_err(|e| AuthError::BadPasswordHash {
                user: spec.name.clone(),
                reason: e.to_string(),
            })?;
            let user = User {
                name: spec.name.clone(),
                role: spec.role,
                password_hash: spec.password_hash.clone(),
                keys: spec.keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            };
            if by_name.insert(spec.name.clone(), Arc::new(user)).is_some() {
                return Err(AuthError::DuplicateUser(spec.name.clone()));
            }
        }
        Ok(Users { by_name })
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)
    }

    /// Checks `password` for user `name`: the user if it matches. Slow on purpose; call it on a
    /// blocking thread. An unknown user costs the same as a wrong password, so the time taken
    /// does not tell which names exist.
    pub fn verify(&self, name: &str, password: &[u8]) -> Option<Arc<User>> {
        match self.by_name.get(name) {
            Some(user) => verify_password(&user.password_hash, password).then(|| user.clone()),
            None => {
                let _ = verify_password(UNKNOWN_USER_HASH, password);
                None
            }
        }
    }
}

/// A hash of a random password nobody knows, verified for unknown users so that they take as
/// long as known ones (same parameters as [`hash_password`]).
const UNKNOWN_USER_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$0bL9MGPg5b6dF5Ruk1eNbGf8lKcvp1a8s0Gm0fwlUdo";

/// Whether `password` matches the PHC string `hash`.
pub fn verify_password(hash: &str, password: &[u8]) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

/// An argon2id PHC string for `password` (argon2's default parameters: 19 MiB, 2 passes), with
/// a fresh random salt.
pub fn hash_password(password: &[u8]) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    random_bytes(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hashing(e.to_string()))?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::Hashing(e.to_string()))
}

/// Fills `out` from the kernel's random source.
pub fn random_bytes(out: &mut [u8]) -> Result<(), AuthError> {
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(out))
        .map_err(|e| AuthError::Random(e.to_string()))
}

/// A fresh admin token: 32 random bytes in hex.
pub fn new_admin_token() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    random_bytes(&mut bytes)?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The admin port's token, kept as its SHA-256 digest.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminTokenHash([u8; 32]);

impl std::fmt::Debug for AdminTokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminTokenHash(sha256:{})", hex(&self.0))
    }
}

impl AdminTokenHash {
    /// `sha256:<64 hex digits>`.
    pub fn parse(text: &str) -> Result<AdminTokenHash, AuthError> {
        let digits = text
            .trim()
            .strip_prefix("sha256:")
            .ok_or(AuthError::BadTokenHash)?;
        if digits.len() != 64 {
            return Err(AuthError::BadTokenHash);
        }
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
                .map_err(|_| AuthError::BadTokenHash)?;
        }
        Ok(AdminTokenHash(digest))
    }

    /// The hash of `token`.
    pub fn of(token: &str) -> AdminTokenHash {
        AdminTokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// The config file's spelling.
    pub fn to_config_string(&self) -> String {
        format!("sha256:{}", hex(&self.0))
    }

    /// Whether `token` hashes to this digest; the comparison takes the same time wherever the
    /// digests differ.
    pub fn matches(&self, token: &str) -> bool {
        let candidate: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let difference = candidate
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

/// `*` matches any run of bytes (none included), `?` any one byte; everything else itself.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative matching with one backtrack point (the last `*`): linear in practice and never
    // recursive, so a hostile key cannot blow the stack.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// What a request needs of its user.
#[derive(Debug, PartialEq, Eq)]
enum Need<'a> {
    Nothing,
    Read(Vec<&'a [u8]>),
    Write(Vec<&'a [u8]>),
    ReadAllKeys,
    Admin,
}

fn need(action: &Action) -> Need<'_> {
    match action {
        Action::Write(command, _) => Need::Write(command.keys()),
        Action::Read(op) => match op {
            ReadOp::Get(key) => Need::Read(vec![key.as_ref()]),
            ReadOp::Exists(keys) | ReadOp::MGet(keys) => {
                Need::Read(keys.iter().map(|k| k.as_ref()).collect())
            }
            ReadOp::DbSize => Need::ReadAllKeys,
        },
        Action::Info => Need::Admin,
        Action::Immediate(_) | Action::Quit | Action::Auth { .. } => Need::Nothing,
    }
}

/// `Err(reply text)` when `user` may not carry out `action`: Redis's `NOPERM` wording.
pub fn authorize(user: &User, action: &Action) -> Result<(), String> {
    let keys_allowed = |keys: &[&[u8]]| match keys.iter().find(|key| !user.may_access(key)) {
        None => Ok(()),
        Some(_) => Err("NOPERM No permissions to access a key".to_owned()),
    };
    match need(action) {
        Need::Nothing => Ok(()),
        Need::Read(keys) => keys_allowed(&keys),
        Need::Write(keys) => {
            if user.role == Role::ReadOnly {
                return Err(format!(
                    "NOPERM User {} has no permissions to run a write command",
                    user.name
                ));
            }
            keys_allowed(&keys)
        }
        Need::ReadAllKeys if user.may_access_all_keys() => Ok(()),
        Need::ReadAllKeys => Err("NOPERM No permissions to access a key".to_owned()),
        Need::Admin if user.role == Role::Admin => Ok(()),
        Need::Admin => Err(format!(
            "NOPERM User {} has no permissions to run an admin command",
            user.name
        )),
    }
}

#[cfg(test)]
mod tests;
