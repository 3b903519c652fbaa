//! Which access key the load generator signs with: flags, an AWS shared-credentials file
//! (Hamster writes `DATA/credentials` in that format) or the usual AWS environment variables.

use std::path::Path;

/// An access key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The access key id.
    pub access_key: String,
    /// The secret access key.
    pub secret_key: String,
}

impl std::fmt::Debug for Credentials {
    // The secret never reaches a log or an error message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// Reads `profile` from the text of an AWS shared-credentials file: INI sections, `key = value`
/// lines, `#`/`;` comments. `[profile NAME]` is accepted as well as `[NAME]` since people copy
/// sections between `~/.aws/config` and `~/.aws/credentials`.
pub fn parse_shared_credentials(text: &str, profile: &str) -> Result<Credentials, String> {
    let mut in_profile = false;
    let mut seen_profile = false;
    let (mut access_key, mut secret_key) = (None, None);
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            let Some(name) = section.strip_suffix(']') else {
                return Err(format!("line {}: unterminated section header", n + 1));
            };
            let name = name.trim();
            let name = name.strip_prefix("profile ").map(str::trim).unwrap_or(name);
            in_profile = name == profile;
            seen_profile |= in_profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected key = value", n + 1));
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => access_key = Some(value.trim().to_string()),
            "aws_secret_access_key" => secret_key = Some(value.trim().to_string()),
            _ => {}
        }
    }
    if !seen_profile {
        return Err(format!("no [{profile}] profile"));
    }
    match (access_key, secret_key) {
        (Some(access_key), Some(secret_key))
            if !access_key.is_empty() && !secret_key.is_empty() =>
        {
            Ok(Credentials {
                access_key,
                secret_key,
            })
        }
        _ => Err(format!(
            "profile [{profile}] needs both aws_access_key_id and aws_secret_access_key"
        )),
    }
}

/// Where the credentials come from, in order: `--access-key`/`--secret-key`, then
/// `--credentials FILE`, then `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (read via `env`).
pub fn resolve(
    access_key: Option<&str>,
    secret_key: Option<&str>,
    file: Option<&Path>,
    profile: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Credentials, String> {
    match (access_key, secret_key) {
        (Some(a), Some(s)) => {
            return Ok(Credentials {
                access_key: a.to_string(),
                secret_key: s.to_string(),
            })
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err("pass both --access-key and --secret-key, or neither".to_string())
        }
        (None, None) => {}
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read credentials file {}: {e}", path.display()))?;
        return parse_shared_credentials(&text, profile)
            .map_err(|e| format!("credentials file {}: {e}", path.display()));
    }
    match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(access_key), Some(secret_key)) => Ok(Credentials {
            access_key,
            secret_key,
        }),
        _ => Err(
            "no credentials: pass --credentials DATA/credentials, --access-key and \
                  --secret-key, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file `hamster init` writes parses as the default profile.
    #[test]
    fn reads_the_file_hamster_writes() {
        let text = "# Hamster root S3 credentials (AWS shared-credentials format)\n[default]\naws_access_key_id = HKabc\naws_secret_access_key = s3cr/et+=\n";
        let c = parse_shared_credentials(text, "default").unwrap();
        assert_eq!(c.access_key, "HKabc");
        // Only the first '=' splits, so secrets may contain '='.
        assert_eq!(c.secret_key, "s3cr/et+=");
    }

    /// Other profiles, comments, unknown keys and `[profile x]` headers are handled.
    #[test]
    fn picks_the_named_profile() {
        let text = "; comment\n[other]\naws_access_key_id=A1\naws_secret_access_key=S1\n\n[profile bench]\nregion = eu-west-1\nAWS_ACCESS_KEY_ID = A2\naws_secret_access_key= S2 \n[default]\naws_access_key_id=A3\naws_secret_access_key=S3\n";
        let c = parse_shared_credentials(text, "bench").unwrap();
        assert_eq!((c.access_key.as_str(), c.secret_key.as_str()), ("A2", "S2"));
        let c = parse_shared_credentials(text, "default").unwrap();
        assert_eq!(c.access_key, "A3");
    }

    /// A missing profile, a half-filled profile and a malformed line are errors that say so.
    #[test]
    fn refuses_incomplete_files() {
        let e = parse_shared_credentials(
            "[x]\naws_access_key_id=A\naws_secret_access_key=S\n",
            "default",
        );
        assert!(e.unwrap_err().contains("no [default]"));
        let e = parse_shared_credentials("[default]\naws_access_key_id=A\n", "default");
        assert!(e.unwrap_err().contains("needs both"));
        let e = parse_shared_credentials("[default]\naws_access_key_id\n", "default");
        assert!(e.unwrap_err().contains("line 2"));
        let e = parse_shared_credentials("[default\n", "default");
        assert!(e.unwrap_err().contains("unterminated"));
    }

    /// Flags win over the file, the file over the environment; half a pair is an error.
    #[test]
    fn resolution_order() {
        let env = |name: &str| match name {
            "AWS_ACCESS_KEY_ID" => Some("EA".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("ES".to_string()),
            _ => None,
        };
        let flags = resolve(Some("FA"), Some("FS"), None, "default", env).unwrap();
        assert_eq!(flags.access_key, "FA");
        let from_env = resolve(None, None, None, "default", env).unwrap();
        assert_eq!(from_env.access_key, "EA");
        assert!(resolve(Some("FA"), None, None, "default", env).is_err());
        let none = resolve(None, None, None, "default", |_| None).unwrap_err();
        assert!(none.contains("no credentials"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "[default]\naws_access_key_id = KA\naws_secret_access_key = KS\n",
        )
        .unwrap();
        let from_file = resolve(None, None, Some(&path), "default", env).unwrap();
        assert_eq!(from_file.access_key, "KA");
        let missing =
            resolve(None, None, Some(&dir.path().join("nope")), "default", env).unwrap_err();
        assert!(missing.contains("cannot read credentials file"));
        // The secret stays out of Debug output.
        assert!(!format!("{from_file:?}").contains("KS"));
    }
}
