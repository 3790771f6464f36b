//! Statement downloads ([`super::Channel::open_statement`]): the body of a day's statement as
//! an [`AsyncBufRead`] the reconciliation parsers read line by line as it arrives, so a
//! statement of any size is never held in memory whole. Where the channel announces a hash of
//! the file (WeChat Pay's `hash_value`), the bytes are hashed as they pass and a mismatch at
//! the end is a read error: the load fails before anything is kept, and is retried.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::{Stream, StreamExt};
use sha1::Digest;
use tokio::io::AsyncBufRead;

use super::ChannelError;
use crate::recon::StatementFormat;

/// Bounds one statement download end to end (the channels' clients bound their API calls
/// much more tightly). A download that stalls is stopped earlier by the reconciliation
/// activity, which watches its progress.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A statement's bytes, as they arrive.
pub type StatementBody = Pin<Box<dyn AsyncBufRead + Send>>;

/// What [`super::Channel::open_statement`] found.
pub enum StatementFile {
    /// Being downloaded, in `format`.
    Ready {
        format: StatementFormat,
        body: StatementBody,
    },
    /// The channel has no statement for the day because nothing happened: an empty one.
    Empty { format: StatementFormat },
    /// Not generated yet: ask again later.
    NotReady,
}

impl std::fmt::Debug for StatementFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatementFile::Ready { format, .. } => write!(f, "Ready({format:?})"),
            StatementFile::Empty { format } => write!(f, "Empty({format:?})"),
            StatementFile::NotReady => f.write_str("NotReady"),
        }
    }
}

/// The body of a statement download's response. A refusal is an error: transient when asking
/// again may help (5xx, too many requests, an address that expired or was not found yet),
/// declined otherwise (our credentials or request are wrong). `sha1`: the lowercase hex SHA-1
/// the channel announced for the file, checked when the body has been read to its end.
pub(crate) fn response_body(
    what: &str,
    resp: reqwest::Response,
    sha1: Option<String>,
) -> Result<StatementBody, ChannelError> {
    let status = resp.status();
    if !status.is_success() {
        let retry = status.is_server_error() || matches!(status.as_u16(), 404 | 408 | 410 | 429);
        return Err(if retry {
            ChannelError::Transient(format!("{what}: HTTP {status}"))
        } else {
            ChannelError::Declined {
                code: format!("HTTP {}", status.as_u16()),
                message: format!("{what}: download refused"),
            }
        });
    }
    let chunks = resp
        .bytes_stream()
        .map(|r| r.map_err(std::io::Error::other));
    let checked = Checked {
        inner: Box::pin(chunks),
        sha1: sha1.map(|expected| (sha1::Sha1::new(), expected.to_ascii_lowercase())),
    };
    Ok(Box::pin(tokio_util::io::StreamReader::new(checked)))
}

/// Passes chunks through, hashing them; at the end, a hash that differs from the announced one
/// becomes an error instead of the end of the stream.
struct Checked<S> {
    inner: S,
    sha1: Option<(sha1::Sha1, String)>,
}

impl<S, B> Stream for Checked<S>
where
    S: Stream<Item = std::io::Result<B>> + Unpin,
    B: AsRef<[u8]>,
{
    type Item = std::io::Result<B>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match ready!(this.inner.poll_next_unpin(cx)) {
            Some(Ok(chunk)) => {
                if let Some((hasher, _)) = &mut this.sha1 {
                    hasher.update(chunk.as_ref());
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => match this.sha1.take() {
                Some((hasher, expected)) => {
                    let got: String = hasher
                        .finalize()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    if got == expected {
                        Poll::Ready(None)
                    } else {
                        Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "the statement's SHA-1 is {got}, the channel announced {expected}"
                            ),
                        ))))
                    }
                }
                None => Poll::Ready(None),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    fn body(chunks: &[&'static str], sha1: Option<&str>) -> StatementBody {
        let items: Vec<std::io::Result<&'static [u8]>> =
            chunks.iter().map(|c| Ok(c.as_bytes())).collect();
        Box::pin(tokio_util::io::StreamReader::new(Checked {
            inner: futures::stream::iter(items),
            sha1: sha1.map(|h| (sha1::Sha1::new(), h.to_string())),
        }))
    }

    #[tokio::test]
    async fn the_announced_hash_is_checked_at_the_end() {
        // SHA-1 of "abc".
        let good = "a9993e364706816aba3e25717850c26c9cd0d89d";
        let mut text = String::new();
        body(&["a", "bc"], Some(good))
            .read_to_string(&mut text)
            .await
            .unwrap();
        assert_eq!(text, "abc");
        let mut text = String::new();
        let err = body(&["a", "bd"], Some(good))
            .read_to_string(&mut text)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        let mut text = String::new();
        body(&["x"], None).read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "x");
    }
}
