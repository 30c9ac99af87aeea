//! The dashboard's HTTP `Source` over the collector API.
//!
//! PLACEHOLDER so the demo compiles on its branch: a colleague writes the real client in
//! parallel with exactly this signature, and the lead replaces this file with theirs at merge.
//! Until then every fetch answers "unreachable", which the dashboard shows as a connection
//! problem (the headless demo does not use this).

use crate::client::{Need, Snapshot, Source, SourceError};

/// A `Source` reading the collector's HTTP API at a base URL.
#[derive(Debug, Clone)]
pub struct HttpSource {
    base_url: String,
    token: Option<String>,
}

impl HttpSource {
    /// A source for the collector at `base_url`, sending `token` as a bearer token if given.
    pub fn new(base_url: &str, token: Option<String>) -> Result<HttpSource, SourceError> {
        Ok(HttpSource { base_url: base_url.to_owned(), token })
    }
}

impl Source for HttpSource {
    fn fetch(&mut self, _need: &Need) -> impl Future<Output = Result<Snapshot, SourceError>> + Send {
        let has_token = self.token.is_some();
        let url = self.base_url.clone();
        async move {
            let _ = (has_token, url);
            Err(SourceError::Unreachable("dashboard client not merged".into()))
        }
    }
}
