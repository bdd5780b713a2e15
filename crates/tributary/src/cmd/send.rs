//! `tributary send`: write one message through a multistreamer source or a StreamIn target.

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{ConfigArg, parse_duration};
use crate::config::{self, Config, SourceKind, TargetKind};
use crate::sinks::streamin_client;
use crate::sources;
use crate::tls::Tls;

/// Arguments of `tributary send`.
#[derive(clap::Args, Debug)]
pub struct SendArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The multistreamer source or streamin target to send through.
    #[arg(long, value_name = "NAME")]
    pub to: String,
    /// Send an emote instead of a text message (multistreamer).
    #[arg(long)]
    pub emote: bool,
    /// The account to send from (multistreamer; default: the internal IRC account 0 for a
    /// `/msg user ...` private message, else the best writable account).
    #[arg(long, value_name = "ID")]
    pub account: Option<u64>,
    /// The stream account to send to (multistreamer; default: the sending account, or the
    /// live one).
    #[arg(long, value_name = "ID")]
    pub to_account: Option<u64>,
    /// The external id of the message (streamin; default: a timestamp).
    #[arg(long, value_name = "ID")]
    pub external_id: Option<String>,
    /// Give up waiting for the server's confirmation after this long.
    #[arg(long, value_name = "D", default_value = "15s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Require the server's echo (multistreamer): fail (exit 1) when none arrives within
    /// --timeout. Without it, a message with no echo within a few seconds is reported as
    /// "sent (not confirmed)" (multistreamer has no acknowledgement) and the exit is 0.
    /// StreamIn answers every message, so its sends are always confirmed.
    #[arg(long)]
    pub confirm: bool,
    /// The message. `/msg user text` sends a private message on multistreamer; markdown
    /// (**bold**, *italic*, links written `[text](url)`) is converted for StreamIn.
    #[arg(value_name = "TEXT")]
    pub text: String,
}

/// `tributary send`.
pub async fn run(args: SendArgs) -> ExitCode {
    let cfg = match config::load(args.config.path()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tributary: {e}");
            return ExitCode::from(2);
        }
    };
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    match send(&cfg, &args).await {
        Ok(confirmed) => {
            println!("{confirmed}");
            ExitCode::SUCCESS
        }
        Err(SendFailed::Usage(e)) => {
            eprintln!("tributary: {e}");
            ExitCode::from(2)
        }
        Err(SendFailed::Refused(e)) => {
            eprintln!("tributary: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why `send` failed.
#[derive(Debug)]
pub enum SendFailed {
    /// The command line does not fit the config (exit 2).
    Usage(String),
    /// The endpoint refused or could not be reached (exit 1).
    Refused(String),
}

/// Sends as the arguments say; answers the server's confirmation as one line.
pub async fn send(cfg: &Config, args: &SendArgs) -> Result<String, SendFailed> {
    if let Some(src) = cfg.sources.iter().find(|s| s.name == args.to) {
        let SourceKind::Multistreamer(ms) = &src.kind else {
            return Err(SendFailed::Usage(format!(
                "source `{}` is read-only; send through a multistreamer source or a streamin target ({})",
                args.to,
                writable_names(cfg)
            )));
        };
        if args.external_id.is_some() {
            return Err(SendFailed::Usage(
                "--external-id applies to streamin targets only".into(),
            ));
        }
        let opts = sources::multistreamer::connect_options(
            &src.name,
            &src.common,
            ms,
            &mut Tls::default(),
        )
        .map_err(SendFailed::Usage)?;
        let req = multistreamer::SendRequest {
            account: args.account,
            to_account: args.to_account,
            text: args.text.clone(),
            emote: args.emote,
            require_echo: args.confirm,
        };
        return multistreamer::send_once(&opts, &req, args.timeout)
            .await
            .map(|c| c.summary())
            .map_err(|e| {
                SendFailed::Refused(format!("sending through `{}` failed: {e}", args.to))
            });
    }
    if let Some(t) = cfg.targets.iter().find(|t| t.name == args.to) {
        let TargetKind::Streamin(st) = &t.kind;
        // `--confirm` needs nothing more here: StreamIn's answer is its confirmation.
        if args.emote || args.account.is_some() || args.to_account.is_some() {
            return Err(SendFailed::Usage(
                "--emote, --account and --to-account apply to multistreamer sources only".into(),
            ));
        }
        let client = streamin_client(st)
            .map_err(|e| SendFailed::Usage(format!("target `{}`: {e}", t.name)))?;
        let mut msg = streamin::NewMessage::markdown(args.text.clone());
        if let Some(id) = &args.external_id {
            msg = msg.with_external_id(id.clone());
        }
        let send = client.new_message(&msg);
        let info = tokio::time::timeout(args.timeout, send)
            .await
            .map_err(|_| {
                SendFailed::Refused(format!(
                    "target `{}`: no answer within {}s",
                    t.name,
                    args.timeout.as_secs_f64()
                ))
            })?
            .map_err(|e| SendFailed::Refused(format!("target `{}`: {e}", t.name)))?;
        return Ok(format!(
            "sent to {} (streamin): external_id={} created_at={} delivery_confirmation={} content={}",
            t.name, info.external_id, info.created_at, info.delivery_confirmation, info.content
        ));
    }
    Err(SendFailed::Usage(format!(
        "no source or target is named `{}`; writable: {}",
        args.to,
        writable_names(cfg)
    )))
}

fn writable_names(cfg: &Config) -> String {
    let names: Vec<&str> = cfg
        .sources
        .iter()
        .filter(|s| matches!(s.kind, SourceKind::Multistreamer(_)))
        .map(|s| s.name.as_str())
        .chain(cfg.targets.iter().map(|t| t.name.as_str()))
        .collect();
    if names.is_empty() {
        "none configured".to_owned()
    } else {
        names.join(", ")
    }
}
