//! Sending chat, sans IO: choosing the accounts, the writer request, recognising the
//! `writerresult` and the server's echo, and the outcome. [`crate::Session::send_chat`] runs
//! the flow; [`crate::Connection::send_chat`] and [`crate::send_once`] do its IO.
//!
//! Multistreamer has no acknowledgement, and the server need not echo every writer's message:
//! an echo confirms a message when it comes; without one the message counts as sent but not
//! confirmed, unless [`SendRequest::require_echo`] makes the echo required.

use std::time::Duration;

use chat_model::Event;
use serde::Serialize;

use crate::Error;
use crate::wire::{
    AccountId, ClientMessage, OutgoingChat, ServerMessage, Status, WriterRequest, private_target,
};

/// What to send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendRequest {
    /// The account to send from (None: the best writable one, see [`plan_send`]).
    pub account: Option<AccountId>,
    /// The stream account to send to (None: see [`plan_send`]).
    pub to_account: Option<AccountId>,
    /// The text; `/msg user text` sends a private message.
    pub text: String,
    /// Send an emote instead of a text message.
    pub emote: bool,
    /// Fail with [`SendError::NotConfirmed`] when no echo arrives within the timeout. When
    /// false, the echo is awaited for at most [`DEFAULT_ECHO_WAIT`] and a message without one
    /// is reported as sent, not confirmed.
    pub require_echo: bool,
}

/// How long a send that does not require the echo waits for it.
pub const DEFAULT_ECHO_WAIT: Duration = Duration::from_secs(3);

/// The internal IRC pseudo-account: `/msg user ...` private messages are defined for it.
pub const IRC_ACCOUNT: AccountId = 0;

/// Whether `text` is a `/msg` command (a private message of the internal IRC account).
pub fn is_msg_command(text: &str) -> bool {
    text.strip_prefix("/msg")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
}

/// Why a message could not be sent.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Connecting failed or the connection broke.
    #[error("connection failed: {0}")]
    Connection(#[from] Error),
    /// The server sent no status in time, so the accounts are unknown.
    #[error("{target} sent no status within {}s", timeout.as_secs_f64())]
    NoStatus {
        /// The stream and its redacted URL.
        target: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The message is empty.
    #[error("nothing to send: the message text is empty")]
    EmptyText,
    /// The sending account is not on the stream.
    #[error("account {account} is not on stream {stream} (accounts: {known})")]
    UnknownAccount {
        /// The account asked for.
        account: AccountId,
        /// The stream.
        stream: u64,
        /// The accounts the stream has, described.
        known: String,
    },
    /// The stream account to send to is not on the stream.
    #[error("target account {account} is not on stream {stream} (accounts: {known})")]
    UnknownTargetAccount {
        /// The account asked for.
        account: AccountId,
        /// The stream.
        stream: u64,
        /// The accounts the stream has, described.
        known: String,
    },
    /// A `/msg` private message without an account, on a stream without the IRC account 0.
    #[error(
        "`/msg` private messages go through the internal IRC account 0, which stream {stream} does not have (accounts: {known})"
    )]
    NoIrcAccount {
        /// The stream.
        stream: u64,
        /// The accounts the stream has, described.
        known: String,
    },
    /// The sending account cannot write chat.
    #[error("account {account} ({name}) is not writable: its chat cannot be written to")]
    NotWritable {
        /// The account.
        account: AccountId,
        /// Its name and network.
        name: String,
    },
    /// No account of the stream can write chat.
    #[error("no account of stream {stream} is writable (accounts: {known})")]
    NoWritableAccount {
        /// The stream.
        stream: u64,
        /// The accounts the stream has, described.
        known: String,
    },
    /// The chat writer was requested but no `writerresult` arrived in time.
    #[error("the chat writer for account {account} → {to_account} did not become ready within {}s", timeout.as_secs_f64())]
    WriterTimeout {
        /// The sending account.
        account: AccountId,
        /// The stream account.
        to_account: AccountId,
        /// How long we waited.
        timeout: Duration,
    },
    /// The echo was required, and the message was sent but the server did not echo it back in
    /// time.
    #[error("sent from account {account} to {to_account}, but the server did not echo it within {}s, and an echo was required: it may or may not have been delivered (multistreamer has no acknowledgement)", timeout.as_secs_f64())]
    NotConfirmed {
        /// The sending account.
        account: AccountId,
        /// The stream account.
        to_account: AccountId,
        /// How long we waited.
        timeout: Duration,
    },
}

impl SendError {
    /// Whether trying the same send again later may succeed: connection failures other than
    /// refused credentials or an unknown stream, a missing status, a writer that did not come.
    /// Never for [`SendError::NotConfirmed`]: the message may have been delivered, and sending
    /// it again could post it twice.
    pub fn is_retryable(&self) -> bool {
        match self {
            SendError::Connection(e) => !chat_model::DisconnectReason::from(e.clone()).is_fatal(),
            SendError::NoStatus { .. } | SendError::WriterTimeout { .. } => true,
            SendError::EmptyText
            | SendError::UnknownAccount { .. }
            | SendError::UnknownTargetAccount { .. }
            | SendError::NotWritable { .. }
            | SendError::NoWritableAccount { .. }
            | SendError::NoIrcAccount { .. }
            | SendError::NotConfirmed { .. } => false,
        }
    }
}

/// What [`plan_send`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendPlan {
    /// The sending account.
    pub account: AccountId,
    /// The stream account it sends to.
    pub to_account: AccountId,
    /// The sending account's name (the echo comes from it).
    pub account_name: String,
    /// The sending account's network.
    pub network: String,
    /// A `writer` request is needed first (writable but not ready).
    pub needs_writer: bool,
    /// The message to send.
    pub message: ClientMessage,
    /// The recipient of a `/msg user ...` private message.
    pub private_to: Option<String>,
    /// The text the echo should carry (without `/msg user`).
    pub body: String,
    /// Whether it is an emote.
    pub emote: bool,
}

fn describe_accounts(status: &Status) -> String {
    if status.accounts.is_empty() {
        return "none".to_owned();
    }
    status
        .accounts
        .iter()
        .map(|(id, a)| {
            let mut flags = Vec::new();
            if a.live {
                flags.push("live");
            }
            if a.writable {
                flags.push(if a.ready {
                    "writable"
                } else {
                    "writable, not ready"
                });
            } else {
                flags.push("read-only");
            }
            format!(
                "{id} {} on {} [{}]",
                a.name,
                if a.network.name.is_empty() {
                    "?"
                } else {
                    &a.network.name
                },
                flags.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Decides who sends to whom, from the stream's `status`.
///
/// The sending account is `req.account`; else, for a `/msg` private message, the internal IRC
/// account 0 (the document defines them for it); else the first writable account in this
/// order: ready and live, ready, live, any (lowest id first within each). The stream account
/// is `req.to_account`, or else account 0 for a `/msg` from account 0 (as in the document's
/// example), else the sender itself when it is live, else the first live account on the
/// sender's network, else the sender itself (as for IRC, account 0).
pub fn plan_send(status: &Status, stream: u64, req: &SendRequest) -> Result<SendPlan, SendError> {
    if req.text.trim().is_empty() {
        return Err(SendError::EmptyText);
    }
    let known = || describe_accounts(status);
    let msg_command = is_msg_command(&req.text);
    let chosen = match req.account {
        None if msg_command => {
            if status.account(IRC_ACCOUNT).is_none() {
                return Err(SendError::NoIrcAccount {
                    stream,
                    known: known(),
                });
            }
            Some(IRC_ACCOUNT)
        }
        other => other,
    };
    let account = match chosen {
        Some(id) => {
            let a = status
                .account(id)
                .ok_or_else(|| SendError::UnknownAccount {
                    account: id,
                    stream,
                    known: known(),
                })?;
            if !a.writable {
                return Err(SendError::NotWritable {
                    account: id,
                    name: format!("{} on {}", a.name, a.network.name),
                });
            }
            id
        }
        None => {
            let rank = |a: &crate::wire::Account| match (a.ready, a.live) {
                (true, true) => 0,
                (true, false) => 1,
                (false, true) => 2,
                (false, false) => 3,
            };
            status
                .accounts
                .iter()
                .filter(|(_, a)| a.writable)
                .min_by_key(|(id, a)| (rank(a), **id))
                .map(|(id, _)| *id)
                .ok_or_else(|| SendError::NoWritableAccount {
                    stream,
                    known: known(),
                })?
        }
    };
    let sender = status.account(account).cloned().unwrap_or_default();
    let to_account = match req.to_account {
        Some(id) => {
            if status.account(id).is_none() {
                return Err(SendError::UnknownTargetAccount {
                    account: id,
                    stream,
                    known: known(),
                });
            }
            id
        }
        None if msg_command && account == IRC_ACCOUNT => IRC_ACCOUNT,
        None if sender.live => account,
        None => status
            .accounts
            .iter()
            .find(|(_, a)| a.live && a.network.name == sender.network.name)
            .map(|(id, _)| *id)
            .unwrap_or(account),
    };
    let (private_to, body) = match private_target(&req.text) {
        Some((user, body)) => (Some(user.to_owned()), body.to_owned()),
        None => (None, req.text.clone()),
    };
    let out = OutgoingChat {
        account_id: account,
        cur_stream_account_id: to_account,
        text: req.text.clone(),
    };
    Ok(SendPlan {
        account,
        to_account,
        account_name: sender.name.clone(),
        network: sender.network.name.clone(),
        needs_writer: !sender.ready,
        message: if req.emote {
            ClientMessage::Emote(out)
        } else {
            ClientMessage::Text(out)
        },
        private_to,
        body,
        emote: req.emote,
    })
}

impl SendPlan {
    /// The `writer` request for this plan.
    pub fn writer_request(&self) -> ClientMessage {
        ClientMessage::Writer(WriterRequest {
            account_id: self.account,
            cur_stream_account_id: self.to_account,
        })
    }

    /// Whether `msg` is the `writerresult` this plan waits for.
    pub fn is_writer_result(&self, msg: &ServerMessage) -> bool {
        matches!(msg, ServerMessage::WriterResult(w)
            if w.account_id == self.account && w.cur_stream_account_id == self.to_account)
    }

    /// Whether `msg` is the server's echo of the message this plan sends: same type, on one of
    /// the two accounts, from the sending account's name (when both are known), with the same
    /// text (the `/msg user` prefix removed for private messages, when the server removes it).
    pub fn is_echo(&self, msg: &ServerMessage) -> bool {
        let m = match (msg, self.emote) {
            (ServerMessage::Text(m), false) | (ServerMessage::Emote(m), true) => m,
            _ => return false,
        };
        if m.account_id
            .is_some_and(|a| a != self.account && a != self.to_account)
        {
            return false;
        }
        let other_author = m.from.name.as_deref().is_some_and(|name| {
            !self.account_name.is_empty() && !name.eq_ignore_ascii_case(&self.account_name)
        });
        if other_author {
            return false;
        }
        let full = match &self.message {
            ClientMessage::Text(o) | ClientMessage::Emote(o) => o.text.as_str(),
            _ => "",
        };
        match &self.private_to {
            Some(user) => {
                let to_matches =
                    m.to.as_ref()
                        .and_then(|t| t.name.as_deref())
                        .is_none_or(|n| n.eq_ignore_ascii_case(user));
                to_matches && (m.text == self.body || m.text == full)
            }
            None => m.to.is_none() && m.text == full,
        }
    }
}

/// What the server confirmed about a sent message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SendConfirmation {
    /// The account it was sent from.
    pub account_id: AccountId,
    /// The stream account it was sent to.
    pub cur_stream_account_id: AccountId,
    /// The sending account's name.
    pub account_name: String,
    /// The sending account's network.
    pub network: String,
    /// Whether it was an emote.
    pub emote: bool,
    /// The recipient, for a private message.
    pub private_to: Option<String>,
    /// The text as the server echoed it, or as sent (without `/msg user`) when no echo came.
    pub text: String,
    /// Whether a chat writer had to be created first.
    pub writer_created: bool,
    /// The server's echo as a normalized event (with its stable id); `None` when none came
    /// within [`SendConfirmation::echo_wait`]: sent, not confirmed.
    pub echo: Option<Event>,
    /// How long the echo was awaited.
    pub echo_wait: Duration,
}

impl SendConfirmation {
    /// Whether the server's echo confirmed the message.
    pub fn confirmed(&self) -> bool {
        self.echo.is_some()
    }

    /// One human line: "sent text as jprjrdev (twitch, account 14 → 14): hello", or
    /// "sent (not confirmed) text as ...: hello (no echo within 3s)".
    pub fn summary(&self) -> String {
        let what = match (&self.private_to, self.emote) {
            (Some(u), _) => format!("private message to {u}"),
            (None, true) => "emote".to_owned(),
            (None, false) => "text".to_owned(),
        };
        let (sent, unconfirmed) = if self.confirmed() {
            ("sent", String::new())
        } else {
            (
                "sent (not confirmed)",
                format!(
                    " (no echo within {}s; multistreamer has no acknowledgement)",
                    self.echo_wait.as_secs_f64()
                ),
            )
        };
        format!(
            "{sent} {what} as {} ({}, account {} → {}{}): {}{unconfirmed}",
            self.account_name,
            self.network,
            self.account_id,
            self.cur_stream_account_id,
            if self.writer_created {
                ", chat writer created"
            } else {
                ""
            },
            self.text
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ChatMessage;

    fn doc_status() -> Status {
        serde_json::from_str(
            r#"{"status":{"data_pushing":true},"accounts":{
            "14":{"live":true,"writable":true,"ready":true,"name":"jprjrdev","network":{"name":"twitch","displayName":"Twitch"}},
            "17":{"live":false,"writable":true,"ready":false,"name":"gamethattunedev","network":{"name":"twitch","displayName":"Twitch"}},
            "25":{"live":true,"writable":false,"ready":false,"name":"tube","network":{"name":"youtube","displayName":"YouTube"}},
            "0":{"live":false,"writable":true,"ready":true,"name":"john","network":{"name":"irc","displayName":"IRC"}}}}"#,
        )
        .unwrap()
    }

    fn req(account: Option<u64>, to: Option<u64>, text: &str) -> SendRequest {
        SendRequest {
            account,
            to_account: to,
            text: text.into(),
            ..Default::default()
        }
    }

    #[test]
    fn default_account_prefers_ready_and_live() {
        let p = plan_send(&doc_status(), 21, &req(None, None, "hi")).unwrap();
        assert_eq!((p.account, p.to_account, p.needs_writer), (14, 14, false));
    }

    #[test]
    fn not_ready_sender_goes_to_the_live_account_of_its_network() {
        let p = plan_send(&doc_status(), 21, &req(Some(17), None, "hi")).unwrap();
        assert_eq!((p.account, p.to_account, p.needs_writer), (17, 14, true));
        assert_eq!(
            p.writer_request(),
            ClientMessage::Writer(WriterRequest {
                account_id: 17,
                cur_stream_account_id: 14
            })
        );
    }

    #[test]
    fn irc_sends_to_itself() {
        let p = plan_send(&doc_status(), 21, &req(Some(0), None, "/msg somebody hey")).unwrap();
        assert_eq!((p.account, p.to_account), (0, 0));
        assert_eq!(p.private_to.as_deref(), Some("somebody"));
        assert_eq!(p.body, "hey");
    }

    #[test]
    fn msg_without_an_account_goes_from_irc_account_0_to_0() {
        // The document's example: account_id 0, cur_stream_account_id 0.
        let p = plan_send(
            &doc_status(),
            21,
            &req(None, None, "/msg somebody hey this is a private message"),
        )
        .unwrap();
        assert_eq!((p.account, p.to_account, p.needs_writer), (0, 0, false));
        assert_eq!(p.private_to.as_deref(), Some("somebody"));
        assert_eq!(
            p.message,
            ClientMessage::Text(OutgoingChat {
                account_id: 0,
                cur_stream_account_id: 0,
                text: "/msg somebody hey this is a private message".into()
            })
        );
        // Even when another IRC account is live, the private message stays on account 0.
        let mut s = doc_status();
        let mut irc = s.account(0).unwrap().clone();
        irc.live = true;
        s.accounts.insert(30, irc);
        let p = plan_send(&s, 21, &req(None, None, "/msg bob psst")).unwrap();
        assert_eq!((p.account, p.to_account), (0, 0));
        // An explicit account or target account is kept.
        let p = plan_send(&doc_status(), 21, &req(Some(14), None, "/msg bob psst")).unwrap();
        assert_eq!((p.account, p.to_account), (14, 14));
        let p = plan_send(&doc_status(), 21, &req(None, Some(14), "/msg bob psst")).unwrap();
        assert_eq!((p.account, p.to_account), (0, 14));
        // Not a /msg command: the usual choice.
        let p = plan_send(&doc_status(), 21, &req(None, None, "/msgx bob psst")).unwrap();
        assert_eq!(p.account, 14);
        // No IRC account on the stream: said so, nothing sent from elsewhere.
        let mut none = doc_status();
        none.accounts.remove(&0);
        let e = plan_send(&none, 21, &req(None, None, "/msg bob psst")).unwrap_err();
        assert!(
            matches!(e, SendError::NoIrcAccount { stream: 21, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("IRC account 0"), "{e}");
    }

    #[test]
    fn msg_commands_are_recognised() {
        assert!(is_msg_command("/msg bob hi"));
        assert!(is_msg_command("/msg"));
        assert!(is_msg_command("/msg\tbob hi"));
        assert!(!is_msg_command("/msgbob hi"));
        assert!(!is_msg_command(" /msg bob hi"));
        assert!(!is_msg_command("hi /msg bob"));
    }

    #[test]
    fn errors_name_the_problem() {
        let e = plan_send(&doc_status(), 21, &req(Some(99), None, "hi")).unwrap_err();
        assert!(matches!(e, SendError::UnknownAccount { account: 99, .. }));
        assert!(
            e.to_string()
                .contains("14 jprjrdev on twitch [live, writable]"),
            "{e}"
        );
        let e = plan_send(&doc_status(), 21, &req(Some(25), None, "hi")).unwrap_err();
        assert!(
            e.to_string()
                .contains("25 (tube on youtube) is not writable"),
            "{e}"
        );
        let e = plan_send(&doc_status(), 21, &req(Some(14), Some(3), "hi")).unwrap_err();
        assert!(
            matches!(e, SendError::UnknownTargetAccount { account: 3, .. }),
            "{e}"
        );
        let e = plan_send(&doc_status(), 21, &req(None, None, "  ")).unwrap_err();
        assert_eq!(e, SendError::EmptyText);
        let mut none = doc_status();
        none.accounts.retain(|_, a| !a.writable);
        let e = plan_send(&none, 21, &req(None, None, "hi")).unwrap_err();
        assert!(matches!(e, SendError::NoWritableAccount { .. }), "{e}");
    }

    fn chat(v: serde_json::Value) -> ChatMessage {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn echo_matching() {
        let p = plan_send(&doc_status(), 21, &req(Some(17), None, "hello")).unwrap();
        let echo = chat(serde_json::json!({"account_id":14,"network":"twitch",
            "from":{"name":"gamethattunedev","id":"9"},"text":"hello"}));
        assert!(p.is_echo(&ServerMessage::Text(echo.clone())));
        assert!(!p.is_echo(&ServerMessage::Emote(echo.clone())));
        let mut other = echo.clone();
        other.from.name = Some("someone".into());
        assert!(!p.is_echo(&ServerMessage::Text(other)));
        let mut other = echo.clone();
        other.text = "hello!".into();
        assert!(!p.is_echo(&ServerMessage::Text(other)));
        let mut other = echo.clone();
        other.account_id = Some(0);
        assert!(!p.is_echo(&ServerMessage::Text(other)));

        let p = plan_send(&doc_status(), 21, &req(Some(0), None, "/msg bob psst")).unwrap();
        let echo = chat(serde_json::json!({"account_id":0,"network":"irc",
            "from":{"name":"john","id":1},"to":{"name":"bob"},"text":"psst"}));
        assert!(p.is_echo(&ServerMessage::Text(echo.clone())));
        let mut elsewhere = echo.clone();
        elsewhere.to = Some(crate::wire::User {
            name: Some("carol".into()),
            ..Default::default()
        });
        assert!(!p.is_echo(&ServerMessage::Text(elsewhere)));
    }

    #[test]
    fn retryable_errors() {
        let target = "multistreamer stream 21 at ws://h/ws/21?token=[redacted]".to_owned();
        let net = SendError::Connection(Error::Network {
            target: target.clone(),
            message: "reset".into(),
        });
        assert!(net.is_retryable());
        let refused = SendError::Connection(Error::Http {
            target,
            status: 403,
            retry_after: None,
        });
        assert!(!refused.is_retryable());
        assert!(
            SendError::WriterTimeout {
                account: 17,
                to_account: 14,
                timeout: Duration::from_secs(1)
            }
            .is_retryable()
        );
        assert!(
            !SendError::NotConfirmed {
                account: 14,
                to_account: 14,
                timeout: Duration::from_secs(1)
            }
            .is_retryable()
        );
        assert!(!SendError::EmptyText.is_retryable());
    }

    #[test]
    fn writer_result_matching() {
        let p = plan_send(&doc_status(), 21, &req(Some(17), None, "hello")).unwrap();
        let ok = ServerMessage::WriterResult(crate::wire::WriterResult {
            account_id: 17,
            cur_stream_account_id: 14,
        });
        let other = ServerMessage::WriterResult(crate::wire::WriterResult {
            account_id: 17,
            cur_stream_account_id: 0,
        });
        assert!(p.is_writer_result(&ok));
        assert!(!p.is_writer_result(&other));
    }
}
