//! `tributary refresh-key`: ask StreamIn for a new API key and store it in the target's key file.

use std::process::ExitCode;

use crate::cli::ConfigArg;
use crate::config::{self, TargetKind};
use crate::sinks::streamin_client;

/// Arguments of `tributary refresh-key`.
#[derive(clap::Args, Debug)]
pub struct RefreshKeyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The streamin target whose API key to refresh.
    #[arg(long, value_name = "NAME")]
    pub to: String,
}

/// `tributary refresh-key`: asks StreamIn for a new API key and stores it in the target's key
/// file (rewritten atomically); at most once a day.
pub async fn run(args: RefreshKeyArgs) -> ExitCode {
    let cfg = match config::load(args.config.path()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tributary: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(t) = cfg.targets.iter().find(|t| t.name == args.to) else {
        eprintln!("tributary: no streamin target is named `{}`", args.to);
        return ExitCode::from(2);
    };
    let TargetKind::Streamin(st) = &t.kind;
    let Some(path) = &st.api_key_file else {
        eprintln!(
            "tributary: target `{}` reads its api_key from the environment or the config text; \
             refreshing needs api_key = {{ file = \"path\" }} so the new key can be stored",
            t.name
        );
        return ExitCode::from(2);
    };
    let mut client = match streamin_client(st) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tributary: target `{}`: {e}", t.name);
            return ExitCode::from(2);
        }
    };
    let store = streamin::FileKeyStore::new(path.clone());
    match client.refresh_api_key(&store).await {
        Ok(_) => {
            println!(
                "refreshed the API key of `{}`; the new key is in {}",
                t.name,
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tributary: target `{}`: {e}", t.name);
            ExitCode::FAILURE
        }
    }
}
