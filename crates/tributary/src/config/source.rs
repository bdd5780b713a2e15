//! Checking a `[[source]]` table: its service, its common settings and its service's own.

use toml::Spanned;

use super::*;

impl Cx<'_> {
    pub(super) fn source(
        &self,
        table: &Spanned<RawSource>,
        warnings: &mut Vec<String>,
    ) -> Result<SourceConfig, ConfigError> {
        let r = table.get_ref();
        let name = self.name(&r.name, table.span(), "source")?;
        let Some(service) = &r.service else {
            return Err(self.err(
                table.span(),
                format!(
                    "source `{name}` has no `service`; valid: {}",
                    SOURCE_SERVICES.join(", ")
                ),
            ));
        };
        let svc = service.get_ref().as_str();
        if !SOURCE_SERVICES.contains(&svc) {
            let hint = if TARGET_SERVICES.contains(&svc) {
                " (streamin is write-only: declare it as a [[target]])"
            } else {
                ""
            };
            return Err(self.err(
                service.span(),
                format!(
                    "source `{name}`: unknown `service` = \"{}\"; valid: {}{hint}",
                    shown(svc),
                    SOURCE_SERVICES.join(", ")
                ),
            ));
        }

        // Keys that only some services accept.
        let only = |present: bool, key: &str, span: Range<usize>, allowed: &[&str]| {
            if present && !allowed.contains(&svc) {
                Err(self.err(
                    span,
                    format!(
                        "source `{name}`: `{key}` is not a {svc} setting (it applies to {})",
                        allowed.join(", ")
                    ),
                ))
            } else {
                Ok(())
            }
        };
        macro_rules! check_only {
            ($field:ident, $allowed:expr) => {
                if let Some(v) = &r.$field {
                    only(true, stringify!($field), v.span(), $allowed)?;
                }
            };
        }
        check_only!(room, &["campfire"]);
        check_only!(join, &["campfire"]);
        check_only!(api_url, &["campfire", "flowdock"]);
        check_only!(flows, &["flowdock"]);
        check_only!(private, &["flowdock"]);
        check_only!(transport, &["flowdock"]);
        check_only!(active, &["flowdock"]);
        check_only!(stream, &["multistreamer"]);
        check_only!(channel, &["ustream"]);
        if svc == "ustream" {
            if let Some(t) = &r.token {
                return Err(self.err(
                    t.span(),
                    format!(
                        "source `{name}`: ustream needs no `token` (the Social Stream is public)"
                    ),
                ));
            }
        }

        let mut common = Common::default();
        let web_schemes: &[&str] = if svc == "multistreamer" {
            &["ws", "wss"]
        } else {
            &["http", "https"]
        };
        if let Some(u) = &r.url {
            common.url = Some(self.url(u, "url", web_schemes)?);
        }
        if let Some(v) = &r.stall_timeout {
            let d = self.duration(v, "stall_timeout")?;
            if d < Duration::from_secs(1) {
                return Err(self.err(v.span(), "`stall_timeout` must be at least 1s".into()));
            }
            common.stall_timeout = Some(d);
        }
        if let Some(b) = &r.backoff {
            let b = b.get_ref();
            if let Some(v) = &b.initial {
                common.backoff_initial = Some(self.duration(v, "backoff.initial")?);
            }
            if let Some(v) = &b.max {
                common.backoff_max = Some(self.duration(v, "backoff.max")?);
            }
            if let (Some(i), Some(m), Some(span)) = (
                common.backoff_initial,
                common.backoff_max,
                b.max.as_ref().map(|m| m.span()),
            ) {
                if i > m {
                    return Err(self.err(
                        span,
                        format!("source `{name}`: `backoff.max` is shorter than `backoff.initial`"),
                    ));
                }
            }
        }
        common.max_retries = r.max_retries.as_ref().map(|v| *v.get_ref());
        if let Some(v) = &r.max_elapsed {
            common.max_elapsed = Some(self.duration(v, "max_elapsed")?);
        }
        if let Some(v) = &r.max_server_delay {
            common.max_server_delay = Some(self.duration(v, "max_server_delay")?);
        }
        if let Some(v) = &r.ca_file {
            let p = self.resolve_path(v.get_ref());
            if !p.is_file() {
                return Err(self.err(
                    v.span(),
                    format!("source `{name}`: `ca_file` {} does not exist", p.display()),
                ));
            }
            common.ca_file = Some(p);
        }

        let token = |warnings: &mut Vec<String>| -> Result<Secret, ConfigError> {
            match &r.token {
                Some(t) => Ok(self.secret(t, "token", &name, warnings)?.0),
                None => Err(self.err(
                    table.span(),
                    format!(
                        "source `{name}` ({svc}) has no `token`; write token = {{ env = \"VAR\" }} or {{ file = \"path\" }}"
                    ),
                )),
            }
        };
        let missing = |key: &str, example: &str| {
            self.err(
                table.span(),
                format!("source `{name}` ({svc}) needs `{key}`, e.g. {example}"),
            )
        };
        let api_url = |warnings: &mut Vec<String>| -> Result<Option<String>, ConfigError> {
            let _ = warnings;
            r.api_url
                .as_ref()
                .map(|u| self.url(u, "api_url", &["http", "https"]))
                .transpose()
        };

        let kind = match svc {
            "campfire" => {
                let token = token(warnings)?;
                let room = r
                    .room
                    .as_ref()
                    .ok_or_else(|| missing("room", "room = 111"))?;
                SourceKind::Campfire(CampfireConfig {
                    token,
                    room: *room.get_ref(),
                    api_url: api_url(warnings)?,
                    join: r.join.as_ref().map(|j| *j.get_ref()).unwrap_or(false),
                })
            }
            "flowdock" => {
                let token = token(warnings)?;
                let flows = r
                    .flows
                    .as_ref()
                    .map(|f| f.get_ref().clone())
                    .unwrap_or_default();
                if let Some(f) = &r.flows {
                    for flow in f.get_ref() {
                        let ok = match flow.split_once('/') {
                            Some((org, fl)) => {
                                !org.is_empty() && !fl.is_empty() && !fl.contains('/')
                            }
                            None => !flow.is_empty() && !flow.contains(char::is_whitespace),
                        };
                        if !ok {
                            return Err(self.err(
                                f.span(),
                                format!("source `{name}`: flow \"{}\" is not `organization/flow` or a flow id", shown(flow)),
                            ));
                        }
                    }
                }
                let private = r.private.as_ref().map(|p| *p.get_ref()).unwrap_or(false);
                if flows.is_empty() && !private {
                    return Err(self.err(
                        table.span(),
                        format!(
                            "source `{name}` (flowdock) needs `flows = [\"org/flow\", ...]` and/or `private = true`"
                        ),
                    ));
                }
                let transport = match r.transport.as_ref().map(|t| t.get_ref().as_str()) {
                    None | Some("sse") => flowdock::Transport::EventStream,
                    Some("json") => flowdock::Transport::Json,
                    Some(other) => {
                        return Err(self.err(
                            r.transport
                                .as_ref()
                                .map(|t| t.span())
                                .unwrap_or(table.span()),
                            format!(
                                "source `{name}`: unknown `transport` = \"{}\"; valid: sse, json",
                                shown(other)
                            ),
                        ));
                    }
                };
                let active = match &r.active {
                    None => None,
                    Some(a) => Some(flowdock::Active::parse(a.get_ref()).ok_or_else(|| {
                        self.err(
                            a.span(),
                            format!("source `{name}`: unknown `active` = \"{}\"; valid: \"true\", \"idle\"", shown(a.get_ref())),
                        )
                    })?),
                };
                SourceKind::Flowdock(FlowdockConfig {
                    token,
                    flows,
                    private,
                    transport,
                    active,
                    api_url: api_url(warnings)?,
                })
            }
            "multistreamer" => {
                let token = token(warnings)?;
                let url = common
                    .url
                    .clone()
                    .ok_or_else(|| missing("url", "url = \"wss://multistreamer.example.com\""))?;
                let stream = r
                    .stream
                    .as_ref()
                    .ok_or_else(|| missing("stream", "stream = 21"))?;
                SourceKind::Multistreamer(MultistreamerConfig {
                    token,
                    url,
                    stream: *stream.get_ref(),
                })
            }
            "ustream" => {
                let channel = r
                    .channel
                    .as_ref()
                    .ok_or_else(|| missing("channel", "channel = 1234"))?;
                SourceKind::Ustream(UstreamConfig {
                    channel: *channel.get_ref(),
                })
            }
            _ => unreachable!("service checked above"),
        };
        Ok(SourceConfig { name, common, kind })
    }
}
