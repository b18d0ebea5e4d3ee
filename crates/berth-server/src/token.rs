//! The built-in token endpoint (`auth.issuer`): the Docker token protocol
//! (GET with basic auth, `scope`, `service`, `offline_token`) and the OAuth2
//! form (POST with `grant_type` password or refresh_token) that containerd uses.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use berth_auth::issuer::{TokenError, TokenRequest};
use berth_auth::{Need, Refusal, Scope};
use http_body_util::BodyExt;

use crate::error::{ApiError, OciCode};
use crate::AppState;

/// Largest form body accepted.
const MAX_FORM: usize = 64 * 1024;

pub(crate) async fn token(State(state): State<AppState>, req: Request) -> Response {
    let Some(authz) = state.config.auth.clone() else { return ApiError::not_found().into_response() };
    let Some(issuer) = authz.issuer() else { return ApiError::not_found().into_response() };
    let (parts, body) = req.into_parts();
    let mut pairs: Vec<(String, String)> =
        parts.uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    if parts.method == Method::POST {
        let bytes = match http_body_util::Limited::new(body, MAX_FORM).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return bad_request("the form is too large or could not be read"),
        };
        pairs.extend(form_urlencoded::parse(&bytes).into_owned());
    } else {
        drop(body);
    }
    let get = |k: &str| pairs.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    let scopes: Vec<Scope> =
        pairs.iter().filter(|(k, _)| k == "scope").flat_map(|(_, v)| Scope::parse_list(v)).collect();
    let basic = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .and_then(berth_auth::decode_basic);
    let request = TokenRequest {
        basic,
        grant_type: if parts.method == Method::POST { get("grant_type") } else { None },
        username: get("username"),
        password: get("password"),
        refresh_token: get("refresh_token"),
        service: get("service"),
        scopes,
        offline: get("offline_token").as_deref() == Some("true") || get("access_type").as_deref() == Some("offline"),
    };
    match issuer.issue(&authz, &request).await {
        Ok(t) => {
            let body = serde_json::to_vec(&t).unwrap_or_default();
            let mut r = Response::new(Body::from(body));
            r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
            r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
            r
        }
        Err(TokenError::Unauthorized) => {
            let refusal = Refusal::Unauthorized {
                challenge: authz.password_challenge(),
                message: "invalid username, password or refresh token",
            };
            crate::authz::refusal(refusal, &Need::Login).into_response()
        }
        Err(TokenError::Invalid(m)) => bad_request(&m),
    }
}

fn bad_request(m: &str) -> Response {
    ApiError::new(OciCode::RequestInvalid).with_message("invalid token request").with_detail(m).into_response()
}
