//! Checking a `[[relay]]` table: its names, kinds, `match` pattern and template.

use toml::Spanned;

use super::*;

impl Cx<'_> {
    pub(super) fn relay(
        &self,
        table: &Spanned<RawRelay>,
        sources: &[SourceConfig],
        targets: &[TargetConfig],
    ) -> Result<RelayConfig, ConfigError> {
        let r = table.get_ref();
        let from = r.from.as_ref().ok_or_else(|| {
            self.err(
                table.span(),
                "this [[relay]] has no `from = [\"source\", ...]`".into(),
            )
        })?;
        let source_names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
        if from.get_ref().is_empty() {
            return Err(self.err(
                from.span(),
                "relay `from` is empty; name at least one source".into(),
            ));
        }
        for f in from.get_ref() {
            if !source_names.contains(&f.as_str()) {
                return Err(self.err(
                    from.span(),
                    format!(
                        "relay `from`: no source is named `{}`; sources: {}",
                        shown(f),
                        source_names.join(", ")
                    ),
                ));
            }
        }
        let to =
            r.to.as_ref()
                .ok_or_else(|| self.err(table.span(), "this [[relay]] has no `to`".into()))?;
        let writable: Vec<&str> = targets
            .iter()
            .map(|t| t.name.as_str())
            .chain(
                sources
                    .iter()
                    .filter(|s| matches!(s.kind, SourceKind::Multistreamer(_)))
                    .map(|s| s.name.as_str()),
            )
            .collect();
        if !writable.contains(&to.get_ref().as_str()) {
            return Err(self.err(
                to.span(),
                format!(
                    "relay `to` = \"{}\" is neither a target nor a multistreamer source; writable: {}",
                    shown(to.get_ref()),
                    if writable.is_empty() { "(none configured)".to_owned() } else { writable.join(", ") }
                ),
            ));
        }
        let kinds = match &r.kinds {
            None => None,
            Some(k) => {
                let mut out = Vec::new();
                for name in k.get_ref() {
                    let kind = Kind::parse(name).ok_or_else(|| {
                        self.err(
                            k.span(),
                            format!(
                                "relay `kinds`: unknown kind \"{}\"; valid: {}",
                                shown(name),
                                Kind::ALL
                                    .iter()
                                    .map(|k| k.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                    })?;
                    out.push(kind);
                }
                Some(out)
            }
        };
        let pattern = match &r.pattern {
            None => None,
            Some(p) => match compile_pattern(p.get_ref()) {
                Ok(re) => Some(re),
                Err(e) => {
                    return Err(self.err(
                        p.span(),
                        format!(
                            "relay `match` is not a valid regular expression: {}",
                            short_message(&e)
                        ),
                    ));
                }
            },
        };
        let template = match &r.template {
            None => Template::default(),
            Some(t) => Template::parse(t.get_ref()).map_err(|UnknownPlaceholder(bad)| {
                self.err(
                    t.span(),
                    format!(
                        "relay `template`: {}",
                        UnknownPlaceholder(shown(&bad).to_string())
                    ),
                )
            })?,
        };
        Ok(RelayConfig {
            from: from.get_ref().clone(),
            to: to.get_ref().clone(),
            kinds,
            pattern,
            template,
        })
    }
}

/// Compiles a relay's `match` pattern, bounded in size.
fn compile_pattern(p: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(p)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| e.to_string())
}
