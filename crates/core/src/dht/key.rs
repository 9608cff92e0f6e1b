//! Record keys: the key a user types and the Kademlia key its record is stored under.
//!
//! js-libp2p's and go-libp2p's Kademlia accept a record only under a namespaced key,
//! `/<namespace>/<rest>`, and check it with the validator of that namespace. tabmesh stores a
//! user's record for `color` under the Kademlia key `/tabmesh/color`, so that such a node, given
//! a validator for the `tabmesh` namespace, can read and check it. The user (the UI,
//! `window.tabmesh`, the command line) keeps writing `color`; replies and views show `color`.
//!
//! Before this namespace, records were stored under the user's key as it was (`color`): these
//! are *old keys*. A record's signature covers its Kademlia key, so nobody but the publisher can
//! move a record to the new key; until the publisher re-signs it (tabs and nodes do so for their
//! own records when they restore them) or it expires (at most a day after its last put), a get
//! that finds nothing under the new key looks under the old one ([`super::ops`]).
//!
//! Provider keys are not namespaced: js and go peers take provider keys to be content ids, with
//! no validator, so the namespace would buy nothing there.

/// The namespace of tabmesh records.
pub const NAMESPACE: &str = "tabmesh";

/// What every record key starts with: `/tabmesh/`.
pub const PREFIX: &str = "/tabmesh/";

/// The Kademlia key of the record for `user` (`color` → `/tabmesh/color`). A key already in the
/// namespace is left as it is, so the mapping can be applied twice.
pub fn kad_key(user: &str) -> Vec<u8> {
    if user.starts_with(PREFIX) {
        user.as_bytes().to_vec()
    } else {
        [PREFIX.as_bytes(), user.as_bytes()].concat()
    }
}

/// Whether a Kademlia key is an old key (stored before the namespace).
pub fn is_old(kad: &[u8]) -> bool {
    !kad.starts_with(PREFIX.as_bytes())
}

/// The user's key of a Kademlia key: the namespace stripped, or an old key as it is.
pub fn user_key(kad: &[u8]) -> &[u8] {
    kad.strip_prefix(PREFIX.as_bytes()).unwrap_or(kad)
}

/// The user's key as text (hex for bytes that are not UTF-8).
pub fn user_text(kad: &[u8]) -> String {
    super::record::key_text(user_key(kad))
}

/// The old key under which the record for Kademlia key `kad` was stored before the namespace,
/// if there is one.
pub fn old_key(kad: &[u8]) -> Option<Vec<u8>> {
    kad.strip_prefix(PREFIX.as_bytes())
        .filter(|rest| !rest.is_empty())
        .map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_key_is_stored_under_the_namespace() {
        assert_eq!(kad_key("color"), b"/tabmesh/color");
        assert_eq!(kad_key("svc/echo/x"), b"/tabmesh/svc/echo/x");
        assert_eq!(kad_key("/other/x"), b"/tabmesh//other/x");
    }

    #[test]
    fn the_mapping_can_be_applied_twice() {
        let once = kad_key("color");
        assert_eq!(kad_key(std::str::from_utf8(&once).unwrap()), once);
    }

    #[test]
    fn views_show_the_users_key() {
        assert_eq!(user_text(b"/tabmesh/color"), "color");
        assert_eq!(user_text(b"color"), "color");
        assert_eq!(user_text(b"/tabmesh/\xff"), "0xff");
    }

    #[test]
    fn old_keys_are_those_outside_the_namespace() {
        assert!(is_old(b"color"));
        assert!(is_old(b"/tabmeshcolor"));
        assert!(!is_old(b"/tabmesh/color"));
        assert_eq!(old_key(b"/tabmesh/color"), Some(b"color".to_vec()));
        assert_eq!(old_key(b"/tabmesh/"), None);
        assert_eq!(old_key(b"color"), None);
    }
}
