//! Token secrets on their way in: from an argument, the environment, a file or stdin.
//!
//! clap quotes an argument's value in its errors ("invalid value 'abcdef.0123…'"), so
//! a secret never goes through a clap parser that can fail: it is taken as an opaque
//! [`SecretArg`] and parsed here, with errors that name the source and the rule broken
//! and never a character of the value.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use boarding::token::{BootstrapToken, TokenId};
use zeroize::Zeroizing;

use crate::error::{CliError, Result};

/// The most bytes read from a token file or stdin: a token is 23, and a file of
/// anything much longer is not a token file.
const MAX_TOKEN_INPUT: u64 = 4096;

/// A secret as given on the command line or in the environment: zeroized on drop and
/// redacted in `Debug`.
#[derive(Clone)]
pub struct SecretArg(Zeroizing<String>);

impl SecretArg {
    /// Whether the argument is `-` (read the secret from stdin).
    pub fn is_stdin(&self) -> bool {
        self.0.as_str() == "-"
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretArg(<redacted>)")
    }
}

/// clap's parser for a [`SecretArg`]: it accepts everything, so clap never has a
/// reason to quote the value.
pub fn secret_arg(s: &str) -> std::result::Result<SecretArg, std::convert::Infallible> {
    Ok(SecretArg(Zeroizing::new(s.to_owned())))
}

/// Where a token comes from, for messages (never the token itself).
#[derive(Debug, Clone)]
pub enum TokenSource<'a> {
    /// An argument or environment variable, by name (`--token`, `TOKEN`).
    Arg(&'static str),
    /// Standard input.
    Stdin,
    /// A file.
    File(&'a Path),
}

impl fmt::Display for TokenSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Arg(name) if name.starts_with("--") || *name == "TOKEN" => write!(f, "the {name} argument"),
            Self::Arg(name) => write!(f, "the environment variable {name}"),
            Self::Stdin => f.write_str("standard input"),
            Self::File(path) => write!(f, "the token file {}", path.display()),
        }
    }
}

fn bad_token(source: &TokenSource<'_>, reason: impl fmt::Display) -> CliError {
    CliError::TokenInput(format!("{source} does not hold a bootstrap token ([a-z0-9]{{6}}.[a-z0-9]{{16}}): {reason}"))
}

/// Parses a token, trimming surrounding whitespace (a file's final newline).
fn parse_token(text: &str, source: &TokenSource<'_>) -> Result<BootstrapToken> {
    let text = text.trim();
    if text.is_empty() {
        return Err(bad_token(source, "it is empty"));
    }
    // `TokenError`'s messages state the rule only, never the input.
    text.parse::<BootstrapToken>().map_err(|e| bad_token(source, e))
}

/// Reads at most [`MAX_TOKEN_INPUT`] bytes from `reader` into a zeroizing buffer.
fn read_bounded(reader: impl Read, source: &TokenSource<'_>) -> Result<Zeroizing<String>> {
    let mut bytes = Zeroizing::new(Vec::new());
    let limit = MAX_TOKEN_INPUT.saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::TokenInput(format!("cannot read {source}: {e}")))?;
    if u64::try_from(bytes.len()).map_or(true, |n| n > MAX_TOKEN_INPUT) {
        return Err(bad_token(source, format_args!("it is over {MAX_TOKEN_INPUT} bytes")));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| bad_token(source, "it is not UTF-8 text"))?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// Reads a token from stdin.
pub fn token_from_stdin() -> Result<BootstrapToken> {
    let source = TokenSource::Stdin;
    let text = read_bounded(std::io::stdin().lock(), &source)?;
    parse_token(&text, &source)
}

/// Reads a token from `path` (`-` is stdin).
pub fn token_from_file(path: &Path) -> Result<BootstrapToken> {
    if path == Path::new("-") {
        return token_from_stdin();
    }
    let source = TokenSource::File(path);
    let file = std::fs::File::open(path).map_err(|e| CliError::TokenInput(format!("cannot open {source}: {e}")))?;
    let text = read_bounded(file, &source)?;
    parse_token(&text, &source)
}

/// A token given as an argument named `name` (`-` reads it from stdin).
pub fn token_from_arg(arg: &SecretArg, name: &'static str) -> Result<BootstrapToken> {
    if arg.is_stdin() {
        return token_from_stdin();
    }
    parse_token(arg.expose(), &TokenSource::Arg(name))
}

/// The environment variable `agent join` reads the token from when no flag gives it.
pub const TOKEN_ENV: &str = "BOARDING_TOKEN";

/// The token of `agent join`: from `--token` (`-` is stdin), `--token-file`, or else
/// `BOARDING_TOKEN`. The variable is read here rather than by clap so that a token
/// exported in the shell never conflicts with an explicit `--token-file`.
pub fn agent_token(token: Option<&SecretArg>, token_file: Option<&PathBuf>) -> Result<BootstrapToken> {
    match (token, token_file) {
        (_, Some(path)) => token_from_file(path),
        (Some(arg), None) => token_from_arg(arg, "--token"),
        (None, None) => match std::env::var_os(TOKEN_ENV) {
            Some(value) => {
                let text = Zeroizing::new(
                    value.into_string().map_err(|_| bad_token(&TokenSource::Arg(TOKEN_ENV), "it is not UTF-8 text"))?,
                );
                parse_token(&text, &TokenSource::Arg(TOKEN_ENV))
            }
            None => Err(CliError::Usage(format!(
                "no token: pass --token-file FILE, or --token - to read it from stdin (or set {TOKEN_ENV})"
            ))),
        },
    }
}

/// The id named by `token delete`'s argument number `position` (from 1): a token id,
/// or a whole token (matched by its id).
pub fn token_id_of(arg: &SecretArg, position: usize) -> Result<TokenId> {
    let text = arg.expose().trim();
    if text.contains('.') {
        return text
            .parse::<BootstrapToken>()
            .map(|t| t.id())
            .map_err(|e| CliError::TokenInput(format!("TOKEN argument {position} is not a whole token: {e}")));
    }
    // The argument may be a secret pasted alone, so even the id error does not quote it.
    text.parse::<TokenId>().map_err(|e| {
        CliError::TokenInput(format!("TOKEN argument {position} is neither a token id nor a whole token: {e}"))
    })
}

/// Replaces anything in `text` that looks like a token, mistyped or not, by
/// `<redacted>` (keeping what stands before a dot, the public id): `X.Y` with X of 1
/// to 10 and Y of 10 or more letters and digits, or a run of 14 or more letters and
/// digits with at least one of each (a token with its dot lost). For clap's errors,
/// which quote stray arguments ("unexpected argument 'abcdef.0123…'"): a secret must not
/// reach a terminal, a log or a CI transcript that way. Dotted addresses, words and most
/// file and host names do not match.
pub fn redact_tokens(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let is_word = |c: &char| c.is_ascii_alphanumeric();
    // The end of the run of word characters starting at `from`.
    let run_end = |from: usize| {
        let mut end = from;
        while chars.get(end).is_some_and(is_word) {
            end = end.saturating_add(1);
        }
        end
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0usize;
    while let Some(&c) = chars.get(i) {
        if !is_word(&c) {
            out.push(c);
            i = i.saturating_add(1);
            continue;
        }
        let head_end = run_end(i);
        let head = chars.get(i..head_end).unwrap_or_default();
        let after_dot = head_end.saturating_add(1);
        let tail_end = if chars.get(head_end) == Some(&'.') { run_end(after_dot) } else { head_end };
        let tail_len = tail_end.saturating_sub(after_dot);
        let glued =
            head.len() >= 14 && head.iter().any(char::is_ascii_digit) && head.iter().any(char::is_ascii_alphabetic);
        if (1..=10).contains(&head.len()) && tail_len >= 10 {
            out.extend(head);
            out.push_str(".<redacted>");
            i = tail_end;
        } else if glued {
            out.push_str("<redacted>");
            i = head_end;
        } else {
            out.extend(head);
            i = head_end;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_like_text_is_redacted() {
        for (text, want) in [
            ("invalid value 'abcdef.0123456789abcde' here", "invalid value 'abcdef.<redacted>' here"),
            ("abcdef.0123456789abcdef", "abcdef.<redacted>"),
            ("x abcdefg.0123456789", "x abcdefg.<redacted>"),
            ("x abc.012345678", "x abc.012345678"),
            ("cannot connect to 127.0.0.1:7443", "cannot connect to 127.0.0.1:7443"),
            ("file tokens.txt and gateway.example.com", "file tokens.txt and gateway.example.com"),
            ("sha256:00ff", "sha256:00ff"),
            ("ünïcode abcdef.0123456789abcdef!", "ünïcode abcdef.<redacted>!"),
            ("'abcdef.Q7X9W2K4ABCDEFGH'", "'abcdef.<redacted>'"),
            ("'abcdefq7x9w2k4abcdefgh'", "'<redacted>'"),
            ("Usage: boarding agent join [OPTIONS] --pin <PIN>", "Usage: boarding agent join [OPTIONS] --pin <PIN>"),
            ("an implementation detail", "an implementation detail"),
        ] {
            assert_eq!(redact_tokens(text), want, "{text}");
        }
    }

    #[test]
    fn parse_errors_never_quote_the_secret() {
        let secret = "0123456789abcde";
        for text in [format!("abcdef.{secret}"), format!("ABCDEF.{secret}f"), format!("abcdef{secret}")] {
            let e = parse_token(&text, &TokenSource::Arg("--token")).unwrap_err().to_string();
            assert!(!e.contains(secret) && !e.contains("0123"), "{e}");
            let e = token_id_of(&secret_arg(&text).unwrap(), 2).unwrap_err().to_string();
            assert!(!e.contains("0123") && e.contains("argument 2"), "{e}");
        }
    }

    #[test]
    fn ids_and_tokens_name_a_token() {
        let id = token_id_of(&secret_arg("abcdef").unwrap(), 1).unwrap();
        let whole = token_id_of(&secret_arg("abcdef.0123456789abcdef").unwrap(), 1).unwrap();
        assert_eq!(id, whole);
        assert_eq!(format!("{:?}", secret_arg("abcdef.0123456789abcdef").unwrap()), "SecretArg(<redacted>)");
    }
}
