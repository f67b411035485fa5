//! Validation of user-supplied identifiers and the IDs the engine derives itself.

/// Longest instance ID accepted, as in Dapr.
pub const MAX_INSTANCE_ID_LEN: usize = 64;

/// Why an instance ID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("instance ID must not be empty")]
    Empty,
    #[error("instance ID '{0}' is longer than {MAX_INSTANCE_ID_LEN} characters")]
    TooLong(String),
    #[error("instance ID '{0}' is invalid: only letters, digits, '_' and '-' are allowed")]
    Invalid(String),
}

/// Dapr's rule: at most 64 characters, each a (Unicode) letter or digit, `_` or `-`.
pub fn validate_instance_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.chars().count() > MAX_INSTANCE_ID_LEN {
        return Err(IdError::TooLong(truncate(id)));
    }
    if !id
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    {
        return Err(IdError::Invalid(truncate(id)));
    }
    Ok(())
}

/// Child workflow IDs come from the SDKs (`<parent>:0001`), so they may contain `:`, and
/// derived IDs may exceed 64 characters; they are only checked for sanity, not Dapr's rule.
pub fn validate_child_instance_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > 1024 || id.chars().any(char::is_control) {
        return Err(IdError::Invalid(truncate(id)));
    }
    Ok(())
}

/// daprd's ID for a child the SDK left unnamed: `<parent>:<last 4 hex digits of 0x10000+id>`.
pub fn default_child_id(parent: &str, action_id: i32) -> String {
    let n = 0x10000u32.wrapping_add(action_id as u32);
    format!("{parent}:{:04x}", n & 0xffff)
}

fn truncate(id: &str) -> String {
    id.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dapr_ids() {
        for id in ["abc", "order-42", "a_b", "Ünïcode", &"x".repeat(64)] {
            assert_eq!(validate_instance_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn rejects_bad_ids() {
        assert_eq!(validate_instance_id(""), Err(IdError::Empty));
        assert!(matches!(
            validate_instance_id(&"x".repeat(65)),
            Err(IdError::TooLong(_))
        ));
        for id in ["a b", "a/b", "a:b", "a.b", "\u{0}"] {
            assert!(
                matches!(validate_instance_id(id), Err(IdError::Invalid(_))),
                "{id}"
            );
        }
    }

    #[test]
    fn child_ids_follow_daprd() {
        assert_eq!(default_child_id("p", 1), "p:0001");
        assert_eq!(default_child_id("p", 0x1234), "p:1234");
        assert!(validate_child_instance_id("p:0001").is_ok());
        assert!(validate_child_instance_id("").is_err());
    }
}
