use super::*;
use crate::command::parse_request;
use bytes::Bytes;

fn words(list: &[&str]) -> Vec<Bytes> {
    list.iter()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

fn user(role: Role, keys: &[&str]) -> User {
    User {
        name: "u".into(),
        role,
        password_hash: String::new(),
        keys: keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
    }
}

fn allowed(user: &User, request: &[&str]) -> bool {
    authorize(user, &parse_request(&words(request))).is_ok()
}

#[test]
fn globs_match_like_redis_key_patterns() {
    for (pattern, text, expected) in [
        ("app:*", "app:1", true),
        ("app:*", "app:", true),
        ("app:*", "ap", false),
        ("app:*", "cfg:1", false),
        ("*", "", true),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        ("*b*b*", "abxxbz", true),
        ("*b*b*", "abxxz", false),
        ("exact", "exact", true),
        ("exact", "exactly", false),
    ] {
        assert_eq!(
            glob_match(pattern.as_bytes(), text.as_bytes()),
            expected,
            "{pattern} {text}"
        );
    }
}

#[test]
fn roles_and_key_patterns_decide_every_command() {
    let reader = user(Role::ReadOnly, &["app:*", "cfg:*"]);
    assert!(allowed(&reader, &["GET", "app:1"]));
    assert!(allowed(&reader, &["MGET", "app:1", "cfg:2"]));
    assert!(
        !allowed(&reader, &["MGET", "app:1", "other"]),
        "every key is checked"
    );
    assert!(!allowed(&reader, &["SET", "app:1", "v"]));
    assert!(!allowed(&reader, &["DBSIZE"]));
    assert!(!allowed(&reader, &["INFO"]));
    assert!(allowed(&reader, &["PING"]));
    let writer = user(Role::ReadWrite, &["app:*"]);
    assert!(allowed(&writer, &["SET", "app:1", "v"]));
    assert!(allowed(&writer, &["INCR", "app:n"]));
    assert!(!allowed(&writer, &["DEL", "app:1", "cfg:1"]));
    assert!(!allowed(&writer, &["CAS", "x", "a", "b"]));
    let all = user(Role::ReadWrite, &["*"]);
    assert!(allowed(&all, &["DBSIZE"]));
    let admin = user(Role::Admin, &[]);
    assert!(allowed(&admin, &["SET", "anything", "v"]));
    assert!(allowed(&admin, &["INFO"]));
    assert!(allowed(&admin, &["DBSIZE"]));
    let refusal = authorize(&reader, &parse_request(&words(&["SET", "app:1", "v"]))).unwrap_err();
    assert!(refusal.starts_with("NOPERM"), "{refusal}");
}

#[test]
fn passwords_hash_to_phc_strings_that_verify() {
    let hash = hash_password(b"s3cret").unwrap();
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    assert!(verify_password(&hash, b"s3cret"));
    assert!(!verify_password(&hash, b"wrong"));
    assert!(!verify_password("not a hash", b"s3cret"));
    let users = Users::from_specs(&[UserSpec {
        name: "alice".into(),
        password_hash: hash,
        role: Role::ReadWrite,
        keys: vec!["app:*".into()],
    }])
    .unwrap();
    assert_eq!(users.verify("alice", b"s3cret").unwrap().name, "alice");
    assert!(users.verify("alice", b"nope").is_none());
    assert!(users.verify("bob", b"s3cret").is_none());
    assert!(PasswordHash::new(UNKNOWN_USER_HASH).is_ok());
}

#[test]
fn bad_user_settings_are_refused() {
    let spec = |name: &str, hash: &str| UserSpec {
        name: name.into(),
        password_hash: hash.into(),
        role: Role::ReadOnly,
        keys: vec![],
    };
    assert!(matches!(
        Users::from_specs(&[spec("a", "plaintext")]),
        Err(AuthError::BadPasswordHash { .. })
    ));
    assert!(matches!(
        Users::from_specs(&[spec("a b", UNKNOWN_USER_HASH)]),
        Err(AuthError::BadUserName(_))
    ));
    assert_eq!(
        Users::from_specs(&[spec("a", UNKNOWN_USER_HASH), spec("a", UNKNOWN_USER_HASH)]),
        Err(AuthError::DuplicateUser("a".into()))
    );
}

#[test]
fn debug_output_leaves_the_password_hash_out() {
    let hash = hash_password(b"pw").unwrap();
    let users = Users::from_specs(&[UserSpec {
        name: "alice".into(),
        password_hash: hash.clone(),
        role: Role::Admin,
        keys: vec![],
    }])
    .unwrap();
    let text = format!("{users:?}");
    assert!(text.contains("alice") && !text.contains(&hash), "{text}");
}

#[test]
fn admin_tokens_are_kept_as_sha256_digests() {
    let hash = AdminTokenHash::of("token-1");
    let text = hash.to_config_string();
    assert!(text.starts_with("sha256:") && text.len() == 7 + 64);
    let parsed = AdminTokenHash::parse(&text).unwrap();
    assert!(parsed.matches("token-1"));
    assert!(!parsed.matches("token-2"));
    assert!(!parsed.matches(""));
    for bad in [
        "",
        "sha256:",
        "sha256:zz",
        "md5:00",
        &text[..text.len() - 1],
    ] {
        assert_eq!(
            AdminTokenHash::parse(bad),
            Err(AuthError::BadTokenHash),
            "{bad}"
        );
    }
    assert_eq!(new_admin_token().unwrap().len(), 64);
}
