//! Checking a `[[target]]` table (StreamIn).

use toml::Spanned;

use super::*;

impl Cx<'_> {
    pub(super) fn target(
        &self,
        table: &Spanned<RawTarget>,
        warnings: &mut Vec<String>,
    ) -> Result<TargetConfig, ConfigError> {
        let r = table.get_ref();
        let name = self.name(&r.name, table.span(), "target")?;
        let Some(service) = &r.service else {
            return Err(self.err(
                table.span(),
                format!(
                    "target `{name}` has no `service`; valid: {}",
                    TARGET_SERVICES.join(", ")
                ),
            ));
        };
        if service.get_ref() != "streamin" {
            let hint = if SOURCE_SERVICES.contains(&service.get_ref().as_str()) {
                format!(" ({} is read as a [[source]])", service.get_ref())
            } else {
                String::new()
            };
            return Err(self.err(
                service.span(),
                format!(
                    "target `{name}`: unknown `service` = \"{}\"; valid: {}{hint}",
                    shown(service.get_ref()),
                    TARGET_SERVICES.join(", ")
                ),
            ));
        }
        let Some(key) = &r.api_key else {
            return Err(self.err(
                table.span(),
                format!("target `{name}` (streamin) needs `api_key = {{ env = \"VAR\" }}` or `{{ file = \"path\" }}`"),
            ));
        };
        let (api_key, api_key_file) = self.secret(key, "api_key", &name, warnings)?;
        let url = r
            .url
            .as_ref()
            .map(|u| self.url(u, "url", &["http", "https"]))
            .transpose()?;
        Ok(TargetConfig {
            name,
            kind: TargetKind::Streamin(StreaminTargetConfig {
                api_key,
                api_key_file,
                url,
            }),
        })
    }
}
