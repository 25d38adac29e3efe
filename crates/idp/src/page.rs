//! The device verification page (RFC 8628 section 3.3) and the sign-in page
//! of the authorization code flow: small HTML forms.
//! Every interpolated value is escaped; the password is never written back.

use std::fmt::Write as _;

/// What the page says above the form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    None,
    Error(&'static str),
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem;color:#222}\
.dev{background:#fff3cd;border:1px solid #e0c36a;padding:.6rem .8rem;border-radius:4px}\
.error{background:#f8d7da;border:1px solid #e3a1a8;padding:.6rem .8rem;border-radius:4px}\
.ok{background:#d1e7dd;border:1px solid #9cc9b3;padding:.6rem .8rem;border-radius:4px}\
label{display:block;margin:.8rem 0}input{display:block;width:100%;padding:.4rem;font-size:1rem;box-sizing:border-box}\
button{margin:.8rem .5rem 0 0;padding:.5rem 1rem;font-size:1rem}";

const BANNER: &str = "<p class=\"dev\"><strong>Development identity provider.</strong> \
Passwords are stored in plain text in its configuration file. Do not use it in production: \
production uses any OpenID Connect provider.</p>";

/// HTML-escapes text for element content and double-quoted attributes.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · Custos development IdP</title><style>{STYLE}</style></head>\
<body><main>{BANNER}<h1>{title}</h1>{body}</main></body></html>\n"
    )
}

/// The form, with the user code and username filled in (escaped).
pub(crate) fn form(user_code: &str, username: &str, notice: Notice) -> String {
    let mut body = String::new();
    if let Notice::Error(message) = notice {
        let _ = write!(body, "<p class=\"error\" role=\"alert\">{}</p>", escape(message));
    }
    let _ = write!(
        body,
        "<p>Enter the code your device shows, then your username and password to approve or deny its sign-in.</p>\
<form method=\"post\">\
<label>Code <input name=\"user_code\" value=\"{code}\" autocomplete=\"off\" autocapitalize=\"characters\" spellcheck=\"false\" required placeholder=\"XXXX-XXXX\"></label>\
<label>Username <input name=\"username\" value=\"{user}\" autocomplete=\"username\" required></label>\
<label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
<button type=\"submit\" name=\"action\" value=\"approve\">Approve</button>\
<button type=\"submit\" name=\"action\" value=\"deny\">Deny</button>\
</form>",
        code = escape(user_code),
        user = escape(username),
    );
    document("Sign in a device", &body)
}

/// The sign-in page of the authorization code flow: the request's
/// parameters as hidden fields (escaped), the username filled in again
/// after a failed attempt, never the password.
pub(crate) fn login(hidden: &[(&str, &str)], app_origin: &str, username: &str, notice: Notice) -> String {
    let mut body = String::new();
    if let Notice::Error(message) = notice {
        let _ = write!(body, "<p class=\"error\" role=\"alert\">{}</p>", escape(message));
    }
    let _ = write!(
        body,
        "<p>Sign in to continue to <strong>{app}</strong>.</p><form method=\"post\" action=\"authorize\">",
        app = escape(app_origin)
    );
    for (name, value) in hidden {
        let _ = write!(body, "<input type=\"hidden\" name=\"{}\" value=\"{}\">", escape(name), escape(value));
    }
    let _ = write!(
        body,
        "<label>Username <input name=\"username\" value=\"{user}\" autocomplete=\"username\" required autofocus></label>\
<label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
<button type=\"submit\" name=\"action\" value=\"login\">Sign in</button>\
<button type=\"submit\" name=\"action\" value=\"cancel\" formnovalidate>Cancel</button>\
</form>",
        user = escape(username),
    );
    document("Sign in", &body)
}

/// A sign-in request that cannot go on and cannot be sent back to the app.
pub(crate) fn refused(message: &str) -> String {
    document("Cannot sign in", &format!("<p class=\"error\" role=\"alert\">{}</p>", escape(message)))
}

/// After a decision.
pub(crate) fn done(approved: bool, user: &str) -> String {
    let body = if approved {
        format!(
            "<p class=\"ok\">Approved: the device is now signed in as <strong>{}</strong>. You can close this page and return to your device.</p>",
            escape(user)
        )
    } else {
        "<p class=\"ok\">Denied: the device will not be signed in. You can close this page.</p>".to_owned()
    };
    document(if approved { "Device approved" } else { "Request denied" }, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_escapes_hidden_fields_and_never_shows_a_password() {
        let page = login(&[("state", "\"><script>x</script>")], "http://a.localhost", "bob\"", Notice::Error("Wrong"));
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("value=\"&quot;&gt;&lt;script&gt;"));
        assert!(page.contains("value=\"bob&quot;\""));
        assert!(page.contains("type=\"password\" autocomplete=\"current-password\" required>"), "the password field is empty");
    }

    #[test]
    fn values_are_escaped() {
        let page = form("\"><script>alert(1)</script>", "a&b'<", Notice::Error("x"));
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&quot;&gt;&lt;script&gt;"));
        assert!(page.contains("a&amp;b&#39;&lt;"));
        assert!(page.contains("Development identity provider"));
    }
}
