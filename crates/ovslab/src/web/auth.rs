//! Who may use the page: whoever holds the secret token, from a page whose
//! address names this server by IP literal or as `localhost`.
//!
//! - The token and a one-time code are each 32 bytes from the kernel's
//!   random source, in hex. The address printed carries the code only
//!   (`?code=…`), never the token: the first GET with it is answered with a
//!   cookie holding the token (`HttpOnly`, `SameSite=Strict`, named after
//!   the port, so two servers on one host keep theirs) and a redirect to
//!   the same address without the code, and the code is spent. So the
//!   address a browser keeps in its history opens nothing: with it again,
//!   a browser that has the cookie is sent on, any other gets 401 (start
//!   `ovslab ui` again for a new address). Scripts send the token as
//!   `Authorization: Bearer …` (they read it from the `Set-Cookie` of
//!   their exchange). Token and code are compared in constant time.
//! - The `Host` header must be an IP address or `localhost`, with the
//!   server's port: a DNS name pointing at 127.0.0.1 (DNS rebinding) is
//!   refused even before the token is looked at.
//! - A request that changes something (POST) and says where it comes from
//!   (`Origin`) must come from this server's own pages.

use std::io::Read as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

/// A secret: the token a request must show, or the one-time code.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// 32 bytes from `/dev/urandom`, in hex.
    pub fn random() -> std::io::Result<Token> {
        let bytes: [u8; 32] = random_bytes()?;
        Ok(Token(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    #[cfg(test)]
    pub fn from_text(text: &str) -> Token {
        Token(text.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `given` is the token, in time that does not depend on where
    /// they differ.
    pub fn matches(&self, given: &str) -> bool {
        constant_time_eq(self.0.as_bytes(), given.as_bytes())
    }
}

/// `N` bytes from the kernel's random source.
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// `a == b`, looking at every byte whatever the first difference (the
/// length is not secret: every token has the same).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The door of the server: its token, its one-time code and its port.
#[derive(Debug)]
pub struct Gate {
    token: Token,
    code: Token,
    /// Whether the code was exchanged for the cookie already.
    spent: AtomicBool,
    port: u16,
}

/// What a request is, as far as the gate cares.
#[derive(Debug, Default, Clone, Copy)]
pub struct Knock<'a> {
    pub get: bool,
    pub post: bool,
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub query: Option<&'a str>,
    pub cookie: Option<&'a str>,
    pub authorization: Option<&'a str>,
}

/// The gate's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Pass,
    /// The code came in the address, for the first time: set the cookie,
    /// and send the browser to the same address without the code.
    SetCookie,
    /// A code came in the address, from a browser that has the cookie
    /// already: send it to the same address without the code.
    Redirect,
    /// 421: the Host header does not name this server.
    WrongHost,
    /// 403: a POST from another site's page.
    WrongOrigin,
    /// 401: no token, or a wrong one.
    NoToken,
    /// 401: the code was spent, and the request has no token.
    CodeSpent,
}

impl Gate {
    pub fn new(token: Token, code: Token, port: u16) -> Self {
        Gate {
            token,
            code,
            spent: AtomicBool::new(false),
            port,
        }
    }

    /// The code the printed address carries.
    pub fn code(&self) -> &str {
        self.code.as_str()
    }

    /// The cookie's name: one per port, so two servers never mix theirs.
    pub fn cookie_name(&self) -> String {
        format!("ovslab-ui-{}", self.port)
    }

    /// The `Set-Cookie` value given with [`Verdict::SetCookie`].
    pub fn set_cookie(&self) -> String {
        format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict",
            self.cookie_name(),
            self.token.as_str()
        )
    }

    /// The verdict on a request. A GET whose address carries the code,
    /// the first one, spends it.
    pub fn judge(&self, knock: &Knock<'_>) -> Verdict {
        let Some(host) = knock.host.filter(|h| self.host_allowed(h)) else {
            return Verdict::WrongHost;
        };
        if knock.post
            && let Some(origin) = knock.origin
            && origin != format!("http://{host}")
        {
            return Verdict::WrongOrigin;
        }
        let name = self.cookie_name();
        let from_cookie = knock
            .cookie
            .into_iter()
            .flat_map(|c| c.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(k, v)| k == name && self.token.matches(v));
        let from_header = knock
            .authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| self.token.matches(t.trim()));
        let known = from_cookie || from_header;
        let codes: Vec<&str> = knock
            .query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|pair| pair.strip_prefix("code="))
            .collect();
        if !knock.get || codes.is_empty() {
            return if known {
                Verdict::Pass
            } else {
                Verdict::NoToken
            };
        }
        let ours = codes.iter().any(|c| self.code.matches(c));
        // One exchange, however many requests bring the code at once.
        if ours
            && self
                .spent
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            Verdict::SetCookie
        } else if known {
            Verdict::Redirect
        } else if ours {
            Verdict::CodeSpent
        } else {
            Verdict::NoToken
        }
    }

    /// `localhost:PORT` or `IP:PORT` (`[v6]:PORT`): names that no DNS
    /// answer can point elsewhere. A `Host` without a port means 80, as
    /// browsers leave out the scheme's default (RFC 9110 §7.2, §4.2.1).
    fn host_allowed(&self, host: &str) -> bool {
        let (name, port) = match host.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((name, "")) => (name, None),
                Some((name, rest)) => match rest.strip_prefix(':') {
                    Some(port) => (name, Some(port)),
                    None => return false,
                },
                None => return false,
            },
            // An IPv6 address comes in brackets.
            None => match host.split_once(':') {
                Some((_, port)) if port.contains(':') => return false,
                Some((name, port)) => (name, Some(port)),
                None => (host, None),
            },
        };
        let port = match port {
            Some(port) => port.parse::<u16>().ok(),
            None => Some(80),
        };
        if port != Some(self.port) {
            return false;
        }
        name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Gate {
        Gate::new(Token::from_text("s3cr3t"), Token::from_text("c0de"), 8080)
    }

    fn knock(host: &'static str) -> Knock<'static> {
        Knock {
            host: Some(host),
            ..Knock::default()
        }
    }

    #[test]
    fn random_tokens_are_long_and_differ() {
        let a = Token::random().unwrap();
        let b = Token::random().unwrap();
        assert_eq!(a.as_str().len(), 64);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(format!("{a:?}"), "Token(…)", "never logged");
    }

    #[test]
    fn tokens_are_compared_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        let t = Token::from_text("s3cr3t");
        assert!(t.matches("s3cr3t"));
        assert!(!t.matches("s3cr3"));
        assert!(!t.matches("S3CR3T"));
    }

    #[test]
    fn the_code_in_the_address_becomes_a_cookie_once() {
        let g = gate();
        assert_eq!(g.code(), "c0de");
        let first = Knock {
            get: true,
            query: Some("code=c0de&lab=seed"),
            ..knock("127.0.0.1:8080")
        };
        assert_eq!(g.judge(&first), Verdict::SetCookie);
        assert_eq!(
            g.set_cookie(),
            "ovslab-ui-8080=s3cr3t; Path=/; HttpOnly; SameSite=Strict",
            "the cookie holds the token, not the code"
        );
        // Spent: the same address again opens nothing by itself…
        assert_eq!(g.judge(&first), Verdict::CodeSpent);
        // …but a browser that has the cookie is sent on.
        let with_cookie = Knock {
            cookie: Some("other=1; ovslab-ui-8080=s3cr3t"),
            ..first
        };
        assert_eq!(g.judge(&with_cookie), Verdict::Redirect);
        let then = Knock {
            get: true,
            cookie: Some("other=1; ovslab-ui-8080=s3cr3t"),
            ..knock("localhost:8080")
        };
        assert_eq!(g.judge(&then), Verdict::Pass);
        let script = Knock {
            authorization: Some("Bearer s3cr3t"),
            ..knock("[::1]:8080")
        };
        assert_eq!(g.judge(&script), Verdict::Pass);
    }

    #[test]
    fn only_a_get_exchanges_the_code_and_the_code_is_no_token() {
        let g = gate();
        let with_code = |get, post| Knock {
            get,
            post,
            query: Some("code=c0de"),
            ..knock("127.0.0.1:8080")
        };
        assert_eq!(g.judge(&with_code(false, true)), Verdict::NoToken);
        assert_eq!(g.judge(&with_code(false, false)), Verdict::NoToken, "HEAD");
        for code in [
            "code=c0d",
            "code=c0deX",
            "code=",
            "token=c0de",
            "code=s3cr3t",
        ] {
            let k = Knock {
                get: true,
                query: Some(code),
                ..knock("127.0.0.1:8080")
            };
            assert_eq!(g.judge(&k), Verdict::NoToken, "{code}");
        }
        for code in ["Bearer c0de", "c0de"] {
            let k = Knock {
                authorization: Some(code),
                ..knock("127.0.0.1:8080")
            };
            assert_eq!(g.judge(&k), Verdict::NoToken, "{code}");
        }
        assert_eq!(g.judge(&with_code(true, false)), Verdict::SetCookie);
    }

    #[test]
    fn the_code_is_spent_once_among_racing_requests() {
        let g = std::sync::Arc::new(gate());
        let verdicts: Vec<Verdict> = (0..8)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    g.judge(&Knock {
                        get: true,
                        query: Some("code=c0de"),
                        ..knock("127.0.0.1:8080")
                    })
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let exchanged = verdicts
            .iter()
            .filter(|v| **v == Verdict::SetCookie)
            .count();
        assert_eq!(exchanged, 1, "{verdicts:?}");
        assert_eq!(
            verdicts
                .iter()
                .filter(|v| **v == Verdict::CodeSpent)
                .count(),
            7
        );
    }

    #[test]
    fn requests_without_the_right_token_are_refused() {
        let g = gate();
        assert_eq!(g.judge(&knock("127.0.0.1:8080")), Verdict::NoToken);
        for wrong in [
            Knock {
                get: true,
                query: Some("token=s3cr3t"),
                ..knock("127.0.0.1:8080")
            },
            Knock {
                cookie: Some("ovslab-ui-9090=s3cr3t"),
                ..knock("127.0.0.1:8080")
            },
            Knock {
                cookie: Some("ovslab-ui-8080=wrong"),
                ..knock("127.0.0.1:8080")
            },
            Knock {
                authorization: Some("Basic s3cr3t"),
                ..knock("127.0.0.1:8080")
            },
        ] {
            assert_eq!(g.judge(&wrong), Verdict::NoToken, "{wrong:?}");
        }
    }

    #[test]
    fn only_ip_literals_and_localhost_on_our_port_are_hosts() {
        let g = gate();
        let with_token = |host: &'static str| Knock {
            cookie: Some("ovslab-ui-8080=s3cr3t"),
            ..knock(host)
        };
        for good in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "10.1.2.3:8080",
        ] {
            assert_eq!(g.judge(&with_token(good)), Verdict::Pass, "{good}");
        }
        // DNS rebinding: a name the attacker controls, pointed at loopback.
        for bad in [
            "evil.example:8080",
            "127.0.0.1:8081",
            "127.0.0.1",
            "localhost.evil.example:8080",
            "",
        ] {
            assert_eq!(g.judge(&with_token(bad)), Verdict::WrongHost, "{bad}");
        }
        assert_eq!(
            g.judge(&Knock {
                host: None,
                ..with_token("x")
            }),
            Verdict::WrongHost
        );
        for bad in ["[::1]", "[::1]8080", "[::1:8080", "::1:8080", "127.0.0.1:"] {
            assert_eq!(g.judge(&with_token(bad)), Verdict::WrongHost, "{bad}");
        }
    }

    #[test]
    fn a_host_without_a_port_means_port_80() {
        let g = Gate::new(Token::from_text("s3cr3t"), Token::from_text("c0de"), 80);
        let with_token = |host: &'static str| Knock {
            cookie: Some("ovslab-ui-80=s3cr3t"),
            ..knock(host)
        };
        for good in [
            "127.0.0.1",
            "localhost",
            "[::1]",
            "127.0.0.1:80",
            "[::1]:80",
        ] {
            assert_eq!(g.judge(&with_token(good)), Verdict::Pass, "{good}");
        }
        for bad in ["evil.example", "127.0.0.1:8080", "[::1]:8080"] {
            assert_eq!(g.judge(&with_token(bad)), Verdict::WrongHost, "{bad}");
        }
        // A browser's Origin leaves the default port out as well.
        let post = Knock {
            post: true,
            origin: Some("http://127.0.0.1"),
            ..with_token("127.0.0.1")
        };
        assert_eq!(g.judge(&post), Verdict::Pass);
    }

    #[test]
    fn a_post_from_another_origin_is_refused() {
        let g = gate();
        let post = |origin| Knock {
            post: true,
            origin,
            cookie: Some("ovslab-ui-8080=s3cr3t"),
            ..knock("127.0.0.1:8080")
        };
        assert_eq!(g.judge(&post(Some("http://127.0.0.1:8080"))), Verdict::Pass);
        assert_eq!(g.judge(&post(None)), Verdict::Pass, "curl sends none");
        assert_eq!(
            g.judge(&post(Some("http://evil.example"))),
            Verdict::WrongOrigin
        );
        assert_eq!(g.judge(&post(Some("null"))), Verdict::WrongOrigin);
    }
}
