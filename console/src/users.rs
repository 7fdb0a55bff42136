//! Who may sign in: `CONSOLE_USERS_FILE` (TOML, one `[[user]]` table each with
//! `name`, `password_hash` (Argon2id, PHC string), `role` = `viewer` |
//! `operator` and optionally `merchants`, as for API callers; omitted = every
//! merchant), password checks, and `console add-user`, which appends a user.
//!
//! The file is read again when it changes, so a user added, removed or made a
//! viewer takes effect without a restart, and a removed user's open sessions
//! stop working at their next request.

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::SystemTime,
};

use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use rand::{distr::Alphanumeric, Rng};
use serde::Deserialize;
use wxpay_store::console::Scope;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sees everything within their merchants, changes nothing.
    Viewer,
    /// May also refund, query WeChat, close and resolve.
    Operator,
}

impl Role {
    pub fn parse(s: &str) -> Result<Self, UsersError> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            other => Err(UsersError::Invalid(format!(
                "role must be viewer or operator, not {other:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

#[derive(Clone)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub scope: Scope,
    password_hash: String,
}

impl User {
    /// What a session remembers of the password it was opened with: the
    /// hash's salt, new with every password. A session whose stamp no longer
    /// matches was opened before the password changed and is refused.
    pub fn credential_stamp(&self) -> &str {
        self.password_hash
            .split('$')
            .nth(4)
            .unwrap_or(&self.password_hash)
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("cannot read the users file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("users file: {0}")]
    Invalid(String),
    #[error("a user named {0:?} already exists")]
    Exists(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUsers {
    #[serde(default)]
    user: Vec<FileUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUser {
    name: String,
    password_hash: String,
    role: String,
    merchants: Option<Vec<String>>,
}

/// A user as `add-user` and the embedded stack make one.
pub struct NewUser {
    pub name: String,
    pub role: Role,
    pub merchants: Option<Vec<String>>,
    pub password: String,
}

/// The users, by name.
#[derive(Debug, Clone, Default)]
pub struct Users {
    by_name: HashMap<String, User>,
}

impl Users {
    pub fn parse(text: &str) -> Result<Self, UsersError> {
        let file: FileUsers =
            toml::from_str(text).map_err(|e| UsersError::Invalid(e.message().to_owned()))?;
        let mut by_name = HashMap::new();
        for u in file.user {
            check_name(&u.name)?;
            let role = Role::parse(&u.role)?;
            PasswordHash::new(&u.password_hash).map_err(|_| {
                UsersError::Invalid(format!(
                    "user {:?}: password_hash is not a PHC string",
                    u.name
                ))
            })?;
            let scope = match u.merchants {
                None => Scope::All,
                Some(list) if list.iter().any(|m| m == "*") => Scope::All,
                Some(list) if list.is_empty() => {
                    return Err(UsersError::Invalid(format!(
                        "user {:?}: an empty merchants list would see nothing; omit it for all",
                        u.name
                    )))
                }
                Some(list) => Scope::Merchants(list),
            };
            let user = User {
                name: u.name.clone(),
                role,
                scope,
                password_hash: u.password_hash,
            };
            if by_name.insert(u.name.clone(), user).is_some() {
                return Err(UsersError::Invalid(format!(
                    "user {:?} appears twice",
                    u.name
                )));
            }
        }
        Ok(Self { by_name })
    }

    pub fn load(path: &Path) -> Result<Self, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|e| UsersError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::parse(&text)
    }

    /// Users made in code (the embedded stack's first operator).
    pub fn from_new(users: &[NewUser]) -> Result<Self, UsersError> {
        let mut text = String::new();
        for u in users {
            text.push_str(&entry(u)?);
        }
        Self::parse(&text)
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.by_name.get(name)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The user, when `password` is theirs. Slow on purpose (Argon2id): call
    /// it off the async threads. An unknown name costs the same as a wrong
    /// password, so timing does not tell which names exist.
    pub fn verify(&self, name: &str, password: &str) -> Option<User> {
        let argon = Argon2::default();
        match self.by_name.get(name) {
            Some(user) => {
                let hash = PasswordHash::new(&user.password_hash).ok()?;
                argon
                    .verify_password(password.as_bytes(), &hash)
                    .ok()
                    .map(|()| user.clone())
            }
            None => {
                if let Ok(hash) = PasswordHash::new(dummy_hash()) {
                    let _ = argon.verify_password(password.as_bytes(), &hash);
                }
                None
            }
        }
    }
}

/// A hash of nothing anyone knows, verified against for unknown names.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&generate_password()).unwrap_or_default())
}

/// Names are plain words: they appear in the audit log and in URLs.
fn check_name(name: &str) -> Result<(), UsersError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(UsersError::Invalid(format!(
            "user name {name:?} must be 1 to 64 letters, digits, '_', '-', '.' or '@'"
        )))
    }
}

/// An Argon2id PHC string of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    let mut salt = [0u8; 16];
    rand::rng().fill(&mut salt);
    let salt =
        SaltString::encode_b64(&salt).map_err(|e| UsersError::Invalid(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Invalid(format!("hashing: {e}")))
}

/// A password for a person to copy once: 20 letters and digits (~119 bits).
pub fn generate_password() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect()
}

/// The TOML table of one user.
fn entry(u: &NewUser) -> Result<String, UsersError> {
    check_name(&u.name)?;
    if u.password.chars().count() < 12 {
        return Err(UsersError::Invalid(
            "a password must be at least 12 characters".into(),
        ));
    }
    let hash = hash_password(&u.password)?;
    let mut table = toml::Table::new();
    table.insert("name".into(), toml::Value::String(u.name.clone()));
    table.insert("password_hash".into(), toml::Value::String(hash));
    table.insert("role".into(), toml::Value::String(u.role.as_str().into()));
    if let Some(merchants) = &u.merchants {
        table.insert(
            "merchants".into(),
            toml::Value::Array(merchants.iter().cloned().map(toml::Value::String).collect()),
        );
    }
    Ok(format!("\n[[user]]\n{table}"))
}

/// Appends `user` to the users file (created, readable by its owner only,
/// when missing). Refuses a name already there and a file that does not
/// parse, so a typo is never buried under new entries.
pub fn add_user(path: &Path, user: &NewUser) -> Result<(), UsersError> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(UsersError::Read {
                path: path.to_owned(),
                reason: e.to_string(),
            })
        }
    };
    let users = Users::parse(&existing)?;
    if users.get(&user.name).is_some() {
        return Err(UsersError::Exists(user.name.clone()));
    }
    let text = entry(user)?;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| UsersError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| UsersError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// The users as the running console sees them: read again when the file's
/// modification time changes (checked by [`UserBook::refresh`]).
#[derive(Clone)]
pub struct UserBook {
    users: Arc<RwLock<Users>>,
    file: Option<(PathBuf, Arc<RwLock<Option<SystemTime>>>)>,
}

impl UserBook {
    pub fn from_file(path: &Path) -> Result<Self, UsersError> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let users = Users::load(path)?;
        Ok(Self {
            users: Arc::new(RwLock::new(users)),
            file: Some((path.to_owned(), Arc::new(RwLock::new(modified)))),
        })
    }

    pub fn fixed(users: Users) -> Self {
        Self {
            users: Arc::new(RwLock::new(users)),
            file: None,
        }
    }

    pub fn snapshot(&self) -> Users {
        self.users
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn get(&self, name: &str) -> Option<User> {
        self.users
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .cloned()
    }

    /// Reads the file again if it changed. A file that no longer parses keeps
    /// the users as they were (and says so in the log): a half-written edit
    /// must not lock everyone out.
    pub fn refresh(&self) {
        let Some((path, seen)) = &self.file else {
            return;
        };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        {
            let seen = seen.read().unwrap_or_else(|p| p.into_inner());
            if *seen == modified {
                return;
            }
        }
        match Users::load(path) {
            Ok(users) => {
                tracing::info!(users = users.len(), "console users file read again");
                *self.users.write().unwrap_or_else(|p| p.into_inner()) = users;
                *seen.write().unwrap_or_else(|p| p.into_inner()) = modified;
            }
            Err(e) => {
                tracing::warn!(error = %e, "console users file changed but does not parse: keeping the users as they were");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator(name: &str, password: &str) -> NewUser {
        NewUser {
            name: name.into(),
            role: Role::Operator,
            merchants: None,
            password: password.into(),
        }
    }

    #[test]
    fn a_user_signs_in_with_their_password_only() {
        let users = Users::from_new(&[operator("ana", "correct horse battery")]).unwrap();
        assert!(users.verify("ana", "correct horse battery").is_some());
        assert!(users.verify("ana", "correct horse batterY").is_none());
        assert!(users.verify("bob", "correct horse battery").is_none());
    }

    #[test]
    fn add_user_appends_and_refuses_a_name_twice() {
        let dir = std::env::temp_dir().join(format!("console-users-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users.toml");
        add_user(&path, &operator("ana", "correct horse battery")).unwrap();
        let mut viewer = operator("vic", "another long password");
        viewer.role = Role::Viewer;
        viewer.merchants = Some(vec!["shop-a".into()]);
        add_user(&path, &viewer).unwrap();
        let users = Users::load(&path).unwrap();
        assert_eq!(users.len(), 2);
        let vic = users.get("vic").unwrap();
        assert_eq!(vic.role, Role::Viewer);
        assert_eq!(vic.scope, Scope::Merchants(vec!["shop-a".into()]));
        assert!(matches!(
            add_user(&path, &operator("ana", "yet another password")),
            Err(UsersError::Exists(_))
        ));
        assert_eq!(Users::load(&path).unwrap().len(), 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o077,
                0,
                "the users file is readable by its owner only"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_file_is_refused_with_its_reason() {
        let err = Users::parse(
            "[[user]]\nname = \"x\"\npassword_hash = \"plain\"\nrole = \"operator\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("PHC"), "{err}");
        let err = Users::parse("[[user]]\nname = \"x\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA\"\nrole = \"admin\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("viewer or operator"), "{err}");
        assert!(Users::from_new(&[operator("ana", "short")]).is_err());
    }
}
