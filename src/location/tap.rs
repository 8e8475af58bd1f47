//! A window on the HTTP responses object_store receives: the server's `Retry-After` advice.
//!
//! object_store retries a 429 or 503 on its own and, when it gives up, returns an error without
//! the response headers. The fetch layer's retry should still honour what the server asked
//! for, so every cloud store is built with this connector: it wraps object_store's reqwest
//! connector (object_store still does all the HTTP) and records `Retry-After` per store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use tokio::time::Instant;

/// Advice older than this is stale: it belonged to another burst of requests.
const FRESH_FOR: Duration = Duration::from_secs(60);
/// Longer waits than this are not honoured: a download should fail rather than hang.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// What a store's server said about retrying.
#[derive(Debug, Default)]
pub struct ServerHints {
    retry_after: Mutex<Option<(Instant, Duration)>>,
}

impl ServerHints {
    /// The most recent `Retry-After` of a 429 or 503 response, if it is fresh; taking it
    /// clears it.
    pub fn take_retry_after(&self) -> Option<Duration> {
        let mut slot = self.retry_after.lock().unwrap_or_else(|p| p.into_inner());
        slot.take()
            .filter(|(seen, _)| seen.elapsed() < FRESH_FOR)
            .map(|(_, d)| d)
    }

    pub(crate) fn record(&self, delay: Duration) {
        *self.retry_after.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), delay.min(MAX_RETRY_AFTER)));
    }
}

/// Builds object_store's reqwest client, wrapped to watch responses.
#[derive(Debug)]
pub(crate) struct TapConnector {
    pub hints: Arc<ServerHints>,
}

impl HttpConnector for TapConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(TapService {
            inner,
            hints: Arc::clone(&self.hints),
        }))
    }
}

#[derive(Debug)]
struct TapService {
    inner: HttpClient,
    hints: Arc<ServerHints>,
}

#[async_trait]
impl HttpService for TapService {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let response = self.inner.execute(request).await?;
        if matches!(response.status().as_u16(), 429 | 503) {
            let advice = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            if let Some(delay) = advice {
                self.hints.record(delay);
            }
        }
        Ok(response)
    }
}

/// `Retry-After` is either seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (when.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = parse_retry_after(&soon).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            None,
            "a past date means no wait"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn advice_is_taken_once_and_goes_stale() {
        let hints = ServerHints::default();
        hints.record(Duration::from_secs(2));
        assert_eq!(hints.take_retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(hints.take_retry_after(), None);
        hints.record(Duration::from_secs(3600));
        tokio::time::advance(FRESH_FOR).await;
        assert_eq!(hints.take_retry_after(), None);
        hints.record(Duration::from_secs(3600));
        assert_eq!(hints.take_retry_after(), Some(MAX_RETRY_AFTER));
    }
}
