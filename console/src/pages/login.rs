//! Signing in and out. A wrong name or password answers 401 with the form
//! again and sets no session; too many attempts answer 429 before any
//! password is checked.

use std::net::SocketAddr;

use askama::Template;
use axum::{
    extract::{ConnectInfo, Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
    Form,
};
use axum_extra::extract::cookie::PrivateCookieJar;
use serde::Deserialize;

use crate::{
    application::AppState,
    error::ConsoleError,
    session::{self, safe_next, Signed},
};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
    username: String,
    next: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    next: String,
}

pub async fn form(Query(q): Query<NextQuery>) -> Result<Response, ConsoleError> {
    page(StatusCode::OK, None, String::new(), &q.next)
}

fn page(
    status: StatusCode,
    error: Option<String>,
    username: String,
    next: &str,
) -> Result<Response, ConsoleError> {
    let html = super::render(&LoginPage {
        error,
        username,
        next: safe_next(next).to_owned(),
    })?;
    Ok((status, html).into_response())
}

#[derive(Deserialize)]
pub struct Credentials {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

pub async fn submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    jar: PrivateCookieJar,
    Form(c): Form<Credentials>,
) -> Result<Response, ConsoleError> {
    let username = c.username.trim().to_owned();
    if !state.limiter.allow(&username, Some(peer.ip())) {
        tracing::warn!(username, "console sign-in attempts held back");
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many attempts: wait a minute and try again.".into()),
            username,
            &c.next,
        );
    }
    let users = state.users.snapshot();
    let name = username.clone();
    let password = c.password;
    // Argon2id takes tens of milliseconds of CPU on purpose: off the async threads.
    let verified = tokio::task::spawn_blocking(move || users.verify(&name, &password))
        .await
        .map_err(|e| ConsoleError::Internal(format!("password check: {e}")))?;
    match verified {
        Some(user) => {
            tracing::info!(
                user = user.name,
                role = user.role.as_str(),
                "console sign-in"
            );
            let jar = session::start(jar, &user, state.secure_cookie);
            Ok((jar, Redirect::to(safe_next(&c.next))).into_response())
        }
        None => {
            tracing::info!(username, "console sign-in refused");
            page(
                StatusCode::UNAUTHORIZED,
                Some("Wrong name or password.".into()),
                username,
                &c.next,
            )
        }
    }
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    signed: Signed,
    jar: PrivateCookieJar,
    Form(f): Form<LogoutForm>,
) -> Result<Response, ConsoleError> {
    // Signing someone out from another site is a nuisance worth refusing too.
    if !signed.csrf_matches(&f.csrf) {
        return Err(ConsoleError::Forbidden(
            "the form's CSRF token is missing or stale".into(),
        ));
    }
    let jar = session::end(jar, state.secure_cookie);
    Ok((jar, Redirect::to("/login")).into_response())
}
