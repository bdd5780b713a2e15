//! A bounded memory of the messages delivered recently, per user, so an `ignUser` item can
//! retract the earlier messages of the user it ignores (the document: "remove all messages
//! from the chat window for the given user").
//!
//! Users are matched as the document matches them: by network provider + displayName
//! ([`NetworkAccount`]), any account of a message's `network[]` array. The memory keeps the
//! last [`PER_USER`] messages of at most [`MAX_USERS`] users (the least recently active user
//! is forgotten first). It is shared by every poller of one source ([`MessageMemory`] is a
//! handle), so it survives reconnects; it is not saved in the cursor, so after a process
//! restart only the messages delivered since are known.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use chat_model::lock_ignoring_poison;

use crate::wire::NetworkAccount;

/// How many recent messages are remembered per user.
pub const PER_USER: usize = 256;
/// How many users are remembered.
pub const MAX_USERS: usize = 2048;

/// One remembered message.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Remembered {
    /// Delivery order.
    seq: u64,
    uid: String,
    /// Its time, epoch seconds.
    at: i64,
}

#[derive(Debug, Default)]
struct User {
    messages: VecDeque<Remembered>,
    last_seq: u64,
}

#[derive(Debug, Default)]
struct Inner {
    users: HashMap<NetworkAccount, User>,
    /// The accounts each remembered uid is filed under.
    by_uid: HashMap<String, Vec<NetworkAccount>>,
    seq: u64,
}

/// A shared handle on a source's memory of recent messages per user (clones share it).
#[derive(Clone, Debug, Default)]
pub struct MessageMemory {
    inner: Arc<Mutex<Inner>>,
}

impl MessageMemory {
    /// An empty memory.
    pub fn new() -> Self {
        MessageMemory::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock_ignoring_poison(&self.inner)
    }

    /// Remembers that the message `uid` (at `at`) of a user known by `accounts` was delivered.
    pub fn record(&self, accounts: &[NetworkAccount], uid: &str, at: i64) {
        if accounts.is_empty() {
            return;
        }
        let mut g = self.lock();
        let inner = &mut *g;
        inner.seq += 1;
        let seq = inner.seq;
        let mut filed = Vec::new();
        for a in accounts {
            if filed.contains(a) {
                continue;
            }
            filed.push(a.clone());
            let user = inner.users.entry(a.clone()).or_default();
            user.last_seq = seq;
            user.messages.push_back(Remembered {
                seq,
                uid: uid.to_owned(),
                at,
            });
            if user.messages.len() > PER_USER {
                if let Some(old) = user.messages.pop_front() {
                    unfile(&mut inner.by_uid, &old.uid, a);
                }
            }
        }
        inner
            .by_uid
            .entry(uid.to_owned())
            .or_default()
            .extend(filed);
        while inner.users.len() > MAX_USERS {
            let Some(oldest) = inner
                .users
                .iter()
                .min_by_key(|(_, u)| u.last_seq)
                .map(|(a, _)| a.clone())
            else {
                break;
            };
            if let Some(user) = inner.users.remove(&oldest) {
                for m in user.messages {
                    unfile(&mut inner.by_uid, &m.uid, &oldest);
                }
            }
        }
    }

    /// Takes out (and forgets) the remembered messages of any of `accounts` at or before
    /// `up_to` (epoch seconds), in delivery order: the messages an `ignUser` at `up_to`
    /// retracts. A message after it (an `ignUser` seen again after an `unIgnUser`) stays.
    pub fn take_user(&self, accounts: &[NetworkAccount], up_to: i64) -> Vec<String> {
        let mut g = self.lock();
        let mut found: Vec<Remembered> = Vec::new();
        for a in accounts {
            if let Some(user) = g.users.get(a) {
                found.extend(
                    user.messages
                        .iter()
                        .filter(|m| m.at <= up_to && !found.iter().any(|f| f.uid == m.uid))
                        .cloned()
                        .collect::<Vec<_>>(),
                );
            }
        }
        found.sort_by_key(|m| m.seq);
        let uids: Vec<String> = found.into_iter().map(|m| m.uid).collect();
        for uid in &uids {
            forget_locked(&mut g, uid);
        }
        uids
    }

    /// Forgets the message `uid` (it was retracted by an `ignMsg`).
    pub fn forget(&self, uid: &str) {
        forget_locked(&mut self.lock(), uid);
    }

    /// How many messages are remembered (each once, however many accounts it is filed under).
    pub fn len(&self) -> usize {
        self.lock().by_uid.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn unfile(by_uid: &mut HashMap<String, Vec<NetworkAccount>>, uid: &str, a: &NetworkAccount) {
    if let Some(list) = by_uid.get_mut(uid) {
        list.retain(|x| x != a);
        if list.is_empty() {
            by_uid.remove(uid);
        }
    }
}

fn forget_locked(inner: &mut Inner, uid: &str) {
    let Some(accounts) = inner.by_uid.remove(uid) else {
        return;
    };
    for a in accounts {
        let empty = match inner.users.get_mut(&a) {
            Some(user) => {
                user.messages.retain(|m| m.uid != uid);
                user.messages.is_empty()
            }
            None => false,
        };
        if empty {
            inner.users.remove(&a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(p: &str, n: &str) -> NetworkAccount {
        NetworkAccount {
            provider: p.into(),
            display_name: n.into(),
        }
    }

    #[test]
    fn takes_a_users_earlier_messages_by_any_account_once() {
        let m = MessageMemory::new();
        let gy = [acc("twitter", "Gyula"), acc("facebook", "G F")];
        m.record(&gy, "1", 10);
        m.record(&[acc("twitter", "Ada")], "2", 11);
        m.record(&gy[1..], "3", 12);
        m.record(&gy, "4", 20);
        let shared = m.clone();
        assert_eq!(shared.len(), 4);
        // ignUser names the facebook account only, at 15: 1 and 3 (not the later 4).
        assert_eq!(m.take_user(&[acc("facebook", "G F")], 15), ["1", "3"]);
        // Taken once: the twitter account no longer holds 1.
        assert_eq!(
            m.take_user(&[acc("twitter", "Gyula")], 15),
            Vec::<String>::new()
        );
        m.forget("4");
        assert_eq!(m.take_user(&gy, 100), Vec::<String>::new());
        assert_eq!(m.take_user(&[acc("twitter", "Ada")], 100), ["2"]);
        assert!(m.is_empty());
        // Display names are matched exactly, provider and all.
        m.record(&[acc("twitter", "Ada")], "5", 1);
        assert!(m.take_user(&[acc("facebook", "Ada")], 9).is_empty());
        assert!(m.take_user(&[acc("twitter", "ada")], 9).is_empty());
    }

    #[test]
    fn bounded_per_user_and_in_users() {
        let m = MessageMemory::new();
        let a = [acc("twitter", "Chatty")];
        for i in 0..PER_USER + 10 {
            m.record(&a, &i.to_string(), i as i64);
        }
        assert_eq!(m.len(), PER_USER);
        for u in 0..MAX_USERS + 5 {
            m.record(&[acc("ustream", &format!("u{u}"))], &format!("x{u}"), 0);
        }
        let g = m.lock();
        assert_eq!(g.users.len(), MAX_USERS);
        assert!(
            !g.users.contains_key(&a[0]),
            "the least recently active user went first"
        );
        assert_eq!(g.by_uid.len(), MAX_USERS);
    }
}
