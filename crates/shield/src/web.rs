//! HTTP: the warning page and the reports API on the warning address (the
//! admin endpoints are the shared `admin` listener's).
//!
//! The warning page names the blocked domain (from the `Host` header),
//! explains why in French, Dutch, German or English (from
//! `Accept-Language`), and links to a form that reports a false positive.
//! It is plain HTTP: for an `https://` link the browser expects a
//! certificate for the blocked name that we do not have, so it shows its own
//! connection error instead of this page (see docs/shield.md).

use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, FromRequest, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;

use crate::config::normalize_domain;
use crate::metrics::{KindLabel, Metrics};
use crate::reports::{Kind, ReportError, Store};

/// State of the warning server.
#[derive(Clone, Debug)]
pub(crate) struct WebState {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) store: Option<Arc<Mutex<Store>>>,
    pub(crate) operator: Arc<str>,
}

/// Path of the false-positive form (under any Host).
pub(crate) const REPORT_PATH: &str = "/.shield/report";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lang {
    En,
    Fr,
    Nl,
    De,
}

/// The preferred language among ours, from an `Accept-Language` header.
fn pick_lang(h: Option<&str>) -> Lang {
    let Some(h) = h else { return Lang::En };
    let mut best: Option<(f32, Lang)> = None;
    for (i, part) in h.split(',').enumerate() {
        let mut it = part.trim().split(';');
        let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = it
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let primary = tag.split('-').next().unwrap_or("");
        let lang = match primary {
            "fr" => Lang::Fr,
            "nl" => Lang::Nl,
            "de" => Lang::De,
            "en" => Lang::En,
            _ => continue,
        };
        // Earlier entries win ties.
        let q = q - i as f32 * 1e-4;
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, lang));
        }
    }
    best.map_or(Lang::En, |b| b.1)
}

struct Texts {
    lang: &'static str,
    title: &'static str,
    blocked: &'static str,
    why: &'static str,
    advice: &'static str,
    report: &'static str,
    report_title: &'static str,
    comment: &'static str,
    send: &'static str,
    thanks: &'static str,
}

fn texts(l: Lang) -> Texts {
    match l {
        Lang::En => Texts {
            lang: "en",
            title: "Warning: phishing site blocked",
            blocked: "The site <strong>{domain}</strong> was blocked.",
            why: "It is on a list of confirmed phishing sites: sites that imitate a bank, a shop or an administration to steal passwords, card numbers or personal data. {operator} stopped your device from reaching it.",
            advice: "Do not enter any personal information on it. If you followed a link in an e-mail or a text message, delete that message.",
            report: "Think this is a mistake? Report a false positive",
            report_title: "Report a false positive",
            comment: "Comment (optional)",
            send: "Send",
            thanks: "Thank you. An analyst will review your report.",
        },
        Lang::Fr => Texts {
            lang: "fr",
            title: "Attention : site d'hameçonnage bloqué",
            blocked: "Le site <strong>{domain}</strong> a été bloqué.",
            why: "Il figure sur une liste de sites d'hameçonnage confirmés : des sites qui imitent une banque, un commerce ou une administration pour voler des mots de passe, des numéros de carte ou des données personnelles. {operator} a empêché votre appareil de l'atteindre.",
            advice: "N'y saisissez aucune information personnelle. Si vous avez suivi un lien reçu par courriel ou SMS, supprimez ce message.",
            report: "Vous pensez qu'il s'agit d'une erreur ? Signaler un faux positif",
            report_title: "Signaler un faux positif",
            comment: "Commentaire (facultatif)",
            send: "Envoyer",
            thanks: "Merci. Un analyste examinera votre signalement.",
        },
        Lang::Nl => Texts {
            lang: "nl",
            title: "Waarschuwing: phishingsite geblokkeerd",
            blocked: "De site <strong>{domain}</strong> is geblokkeerd.",
            why: "Deze staat op een lijst van bevestigde phishingsites: sites die een bank, winkel of overheid nabootsen om wachtwoorden, kaartnummers of persoonsgegevens te stelen. {operator} heeft voorkomen dat uw apparaat deze site bereikt.",
            advice: "Vul er geen persoonlijke gegevens in. Als u een link in een e-mail of sms hebt gevolgd, verwijder dat bericht.",
            report: "Denkt u dat dit een vergissing is? Meld een vals positief",
            report_title: "Een vals positief melden",
            comment: "Opmerking (optioneel)",
            send: "Versturen",
            thanks: "Dank u. Een analist bekijkt uw melding.",
        },
        Lang::De => Texts {
            lang: "de",
            title: "Warnung: Phishing-Seite blockiert",
            blocked: "Die Seite <strong>{domain}</strong> wurde blockiert.",
            why: "Sie steht auf einer Liste bestätigter Phishing-Seiten: Seiten, die eine Bank, einen Shop oder eine Behörde nachahmen, um Passwörter, Kartennummern oder persönliche Daten zu stehlen. {operator} hat verhindert, dass Ihr Gerät sie erreicht.",
            advice: "Geben Sie dort keine persönlichen Daten ein. Wenn Sie einem Link aus einer E-Mail oder SMS gefolgt sind, löschen Sie diese Nachricht.",
            report: "Halten Sie das für einen Fehler? Falsch-Positiv melden",
            report_title: "Falsch-Positiv melden",
            comment: "Kommentar (optional)",
            send: "Senden",
            thanks: "Danke. Ein Analyst prüft Ihre Meldung.",
        },
    }
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The domain named by the Host header, if it is one.
fn host_domain(h: &HeaderMap) -> Option<String> {
    let host = h.get(header::HOST)?.to_str().ok()?;
    let host = match host.rsplit_once(':') {
        Some((hh, p)) if p.chars().all(|c| c.is_ascii_digit()) => hh,
        _ => host,
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    normalize_domain(host)
}

fn page(t: &Texts, title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>body{{font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em;line-height:1.5}}\
         h1{{color:#b00020}}</style></head><body>{body}</body></html>\n",
        lang = t.lang,
    )
}

fn no_store(code: StatusCode, html: String) -> Response {
    (
        code,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        ],
        html,
    )
        .into_response()
}

async fn warning(State(s): State<WebState>, headers: HeaderMap) -> Response {
    s.metrics.warning_pages.inc();
    let t = texts(pick_lang(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    ));
    let domain = host_domain(&headers);
    let shown = esc(domain.as_deref().unwrap_or("?"));
    let op = esc(&s.operator);
    let link = format!(
        "{REPORT_PATH}?domain={}",
        esc(&domain.clone().unwrap_or_default())
    );
    let body = format!(
        "<h1>{title}</h1><p>{blocked}</p><p>{why}</p><p>{advice}</p><p><a href=\"{link}\">{report}</a></p>",
        title = t.title,
        blocked = t.blocked.replace("{domain}", &shown),
        why = t.why.replace("{operator}", &op),
        advice = t.advice,
        report = t.report,
    );
    no_store(StatusCode::FORBIDDEN, page(&t, t.title, &body))
}

#[derive(Debug, Deserialize)]
struct DomainQuery {
    #[serde(default)]
    domain: String,
}

async fn report_form(headers: HeaderMap, Query(q): Query<DomainQuery>) -> Response {
    let t = texts(pick_lang(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    ));
    let d = esc(&q.domain);
    let body = format!(
        "<h1>{title}</h1><form method=\"post\" action=\"/api/reports\">\
         <input type=\"hidden\" name=\"kind\" value=\"false_positive\">\
         <p><input name=\"url\" value=\"{d}\" size=\"40\"></p>\
         <p><label>{comment}<br><textarea name=\"comment\" rows=\"4\" cols=\"40\"></textarea></label></p>\
         <p><button type=\"submit\">{send}</button></p></form>",
        title = t.report_title,
        comment = t.comment,
        send = t.send,
    );
    no_store(StatusCode::OK, page(&t, t.report_title, &body))
}

/// A report as submitted.
#[derive(Debug, Deserialize)]
pub(crate) struct ReportIn {
    url: String,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

async fn post_report(State(s): State<WebState>, req: Request) -> Response {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let lang = pick_lang(
        req.headers()
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    );
    let input = if is_json {
        Json::<ReportIn>::from_request(req, &())
            .await
            .map(|Json(x)| x)
            .map_err(|e| e.body_text())
    } else {
        Form::<ReportIn>::from_request(req, &())
            .await
            .map(|Form(x)| x)
            .map_err(|e| e.body_text())
    };
    let input = match input {
        Ok(i) => i,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let Some(kind) = Kind::parse(input.kind.as_deref().unwrap_or("")) else {
        return (StatusCode::BAD_REQUEST, "kind: phishing or false_positive").into_response();
    };
    let Some(store) = s.store.clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "reports are not enabled").into_response();
    };
    let r = tokio::task::spawn_blocking(move || {
        let mut st = store.lock().unwrap_or_else(|e| e.into_inner());
        st.submit(&input.url, input.comment.as_deref(), kind)
    })
    .await;
    match r {
        Ok(Ok(sub)) => {
            s.metrics
                .reports
                .get_or_create(&KindLabel {
                    kind: kind.as_str().into(),
                })
                .inc();
            if is_json {
                let code = if sub.merged {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                (code, Json(serde_json_value(sub.id, sub.merged))).into_response()
            } else {
                let t = texts(lang);
                no_store(
                    StatusCode::OK,
                    page(&t, t.report_title, &format!("<p>{}</p>", t.thanks)),
                )
            }
        }
        Ok(Err(ReportError::BadUrl(u))) => {
            (StatusCode::BAD_REQUEST, format!("{u:?} names no domain")).into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!("storing a report: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not store the report",
            )
                .into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response(),
    }
}

/// The JSON body of a stored report.
#[derive(Debug, serde::Serialize)]
struct ReportOut {
    id: i64,
    merged: bool,
}

fn serde_json_value(id: i64, merged: bool) -> ReportOut {
    ReportOut { id, merged }
}

/// The warning page and reports API.
pub(crate) fn warning_router(state: WebState) -> Router {
    Router::new()
        .route("/api/reports", post(post_report))
        .route(REPORT_PATH, get(report_form))
        .fallback(warning)
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages() {
        assert_eq!(pick_lang(None), Lang::En);
        assert_eq!(pick_lang(Some("fr-BE,fr;q=0.9,en;q=0.8")), Lang::Fr);
        assert_eq!(pick_lang(Some("es,nl;q=0.5,de;q=0.4")), Lang::Nl);
        assert_eq!(pick_lang(Some("en;q=0.3, de-CH")), Lang::De);
        assert_eq!(pick_lang(Some("ja")), Lang::En);
        assert_eq!(pick_lang(Some("de, nl")), Lang::De);
    }

    #[test]
    fn host_is_escaped_or_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "Evil.Example:80".parse().unwrap());
        assert_eq!(host_domain(&h).as_deref(), Some("evil.example"));
        h.insert(header::HOST, "<script>".parse().unwrap());
        assert_eq!(host_domain(&h), None);
        assert_eq!(esc("<a href='x'>"), "&lt;a href=&#39;x&#39;&gt;");
    }
}
