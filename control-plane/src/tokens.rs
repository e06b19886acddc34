//! Bootstrap tokens: how a sidecar proves its identity to the CA outside Kubernetes.
//!
//! `--bootstrap-tokens FILE` holds one grant a line, `TOKEN NAMESPACE/SERVICE_ACCOUNT`
//! (`NAMESPACE/*`: any service account of the namespace), `#` comments and blank lines.
//! A token may appear on several lines to grant several identities. The file is read once, at
//! start. Tokens are compared in constant time and never logged.

use std::path::Path;

/// The grants of a tokens file.
pub struct Tokens {
    grants: Vec<Grant>,
}

struct Grant {
    token: Vec<u8>,
    namespace: String,
    /// `None` for `*`: every service account of the namespace.
    service_account: Option<String>,
}

/// Why a token does not prove an identity. The message sent to the sidecar is the same for
/// all of them (see [`TokenError`]'s `Display`), so a caller cannot tell a wrong token from a
/// right token for another identity; the reason goes to the log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "no bootstrap tokens configured (start the control plane with --bootstrap-tokens FILE)"
    )]
    NoTokens,
    #[error("the token does not prove this identity")]
    UnknownToken,
    #[error("the token does not prove this identity")]
    NotGranted,
}

impl TokenError {
    /// The `reason` label of `remora_cp_certificate_requests_refused_total`.
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::NoTokens => "no_tokens",
            TokenError::UnknownToken => "unknown_token",
            TokenError::NotGranted => "identity_not_granted",
        }
    }
}

impl Tokens {
    pub fn read(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|(line, e)| format!("{}:{line}: {e}", path.display()))
    }

    /// Parses a tokens file; an error comes with its line number.
    pub fn parse(text: &str) -> Result<Tokens, (usize, String)> {
        let mut grants = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [token, identity] = fields.as_slice() else {
                return Err((i + 1, "expected `TOKEN NAMESPACE/SERVICE_ACCOUNT`".into()));
            };
            let Some((namespace, sa)) = identity.split_once('/') else {
                let msg = format!("'{identity}' is not NAMESPACE/SERVICE_ACCOUNT");
                return Err((i + 1, msg));
            };
            if namespace.is_empty() || sa.is_empty() || namespace == "*" {
                let msg = format!(
                    "'{identity}' is not NAMESPACE/SERVICE_ACCOUNT (only the service account may be *)"
                );
                return Err((i + 1, msg));
            }
            grants.push(Grant {
                token: token.as_bytes().to_vec(),
                namespace: namespace.to_owned(),
                service_account: (sa != "*").then(|| sa.to_owned()),
            });
        }
        Ok(Tokens { grants })
    }

    pub fn len(&self) -> usize {
        self.grants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// Whether `token` grants `namespace/service_account`. Every grant is compared, in
    /// constant time, whatever matched: how long this takes says nothing of the tokens.
    pub fn check(
        &self,
        token: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<(), TokenError> {
        let (mut known, mut granted) = (false, false);
        for grant in &self.grants {
            let same = constant_time_eq(&grant.token, token.as_bytes());
            let covers = grant.namespace == namespace
                && grant
                    .service_account
                    .as_deref()
                    .is_none_or(|sa| sa == service_account);
            known |= same;
            granted |= same & covers;
        }
        match (known, granted) {
            (_, true) => Ok(()),
            (true, false) => Err(TokenError::NotGranted),
            (false, _) => Err(TokenError::UnknownToken),
        }
    }
}

/// Compares two byte strings in time that depends on their lengths only, never on where they
/// differ. (The length of a token is not a secret worth a dependency.)
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box: keep the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

/// Checks the tokens of an optional file, so a control plane without one refuses every
/// request with a reason.
pub fn check(
    tokens: Option<&Tokens>,
    token: &str,
    namespace: &str,
    service_account: &str,
) -> Result<(), TokenError> {
    match tokens {
        Some(t) if !t.is_empty() => t.check(token, namespace, service_account),
        _ => Err(TokenError::NoTokens),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# web's sidecars
tok-web   shop/web

tok-shop  shop/*
tok-two   shop/api
tok-two   billing/api
";

    #[test]
    fn grants_exact_service_accounts_and_whole_namespaces() {
        let t = Tokens::parse(FILE).unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t.check("tok-web", "shop", "web"), Ok(()));
        assert_eq!(
            t.check("tok-web", "shop", "api"),
            Err(TokenError::NotGranted)
        );
        assert_eq!(
            t.check("tok-web", "billing", "web"),
            Err(TokenError::NotGranted)
        );
        assert_eq!(t.check("tok-shop", "shop", "anything"), Ok(()));
        assert_eq!(
            t.check("tok-shop", "shopping", "web"),
            Err(TokenError::NotGranted)
        );
        assert_eq!(t.check("tok-two", "shop", "api"), Ok(()));
        assert_eq!(t.check("tok-two", "billing", "api"), Ok(()));
        assert_eq!(
            t.check("tok-we", "shop", "web"),
            Err(TokenError::UnknownToken)
        );
        assert_eq!(t.check("", "shop", "web"), Err(TokenError::UnknownToken));
    }

    #[test]
    fn no_file_or_an_empty_one_refuses_everything() {
        assert_eq!(check(None, "x", "shop", "web"), Err(TokenError::NoTokens));
        let empty = Tokens::parse("# nothing\n\n").unwrap();
        assert_eq!(
            check(Some(&empty), "x", "shop", "web"),
            Err(TokenError::NoTokens)
        );
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        for (text, line) in [
            ("ok shop/web\njust-a-token\n", 2),
            ("tok shopweb\n", 1),
            ("tok */web\n", 1),
            ("tok shop/\n", 1),
            ("\n\ntok shop/web extra\n", 3),
        ] {
            assert_eq!(Tokens::parse(text).err().map(|e| e.0), Some(line), "{text}");
        }
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
