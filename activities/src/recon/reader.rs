//! Reading a statement one text line at a time, and splitting a line into fields.
//!
//! Memory stays bounded whatever the statement's size: one line is held at a time, and a line
//! (or a CSV record continued over several lines by a quoted line break) longer than
//! [`MAX_LINE_BYTES`] is an error rather than a growing buffer.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

use super::line::StatementError;

/// The longest line (or CSV record) accepted. Real statement lines are a few hundred bytes.
pub(crate) const MAX_LINE_BYTES: usize = 64 * 1024;

pub(crate) struct LineReader<R> {
    inner: R,
    line_no: u64,
    buf: Vec<u8>,
    done: bool,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        LineReader {
            inner,
            line_no: 0,
            buf: Vec::with_capacity(512),
            done: false,
        }
    }

    /// The next physical line without its line break (`\n` or `\r\n`) and its 1-based number
    /// in the file; `None` at the end. A UTF-8 byte-order mark opening the file is dropped.
    pub(crate) async fn next_line(&mut self) -> Result<Option<(u64, String)>, StatementError> {
        if self.done {
            return Ok(None);
        }
        self.buf.clear();
        let line = self.line_no + 1;
        // Content, then at most "\r\n": one byte more than that means the line is too long.
        let limit = MAX_LINE_BYTES as u64 + 2;
        let n = (&mut self.inner)
            .take(limit)
            .read_until(b'\n', &mut self.buf)
            .await
            .map_err(|source| StatementError::Io { line, source })?;
        if n == 0 {
            self.done = true;
            return Ok(None);
        }
        self.line_no = line;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        } else if n as u64 == limit {
            return Err(StatementError::LineTooLong {
                line,
                max: MAX_LINE_BYTES,
            });
        } else if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        if self.buf.len() > MAX_LINE_BYTES {
            return Err(StatementError::LineTooLong {
                line,
                max: MAX_LINE_BYTES,
            });
        }
        let mut text = String::from_utf8(std::mem::take(&mut self.buf))
            .map_err(|_| StatementError::NotUtf8 { line })?;
        if line == 1 && text.starts_with('\u{feff}') {
            text.drain(..'\u{feff}'.len_utf8());
        }
        Ok(Some((line, text)))
    }
}

/// Whether a CSV record still has a quoted field open (an odd number of quotes: inside quotes
/// a quote is doubled), so that it continues on the next physical line.
pub(crate) fn quote_open(record: &str) -> bool {
    record.bytes().filter(|&b| b == b'"').count() % 2 == 1
}

/// Splits one CSV record (RFC 4180): fields separated by commas; a field holding a comma,
/// quote or line break is quoted, with `""` for a quote inside. `None` when a quote is
/// misplaced or left open.
pub(crate) fn split_csv(record: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = record.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                    // A closing quote must end the field.
                    if !matches!(chars.peek(), None | Some(',')) {
                        return None;
                    }
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            '"' => return None,
            ',' => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
            }
            c => {
                field.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return None;
    }
    fields.push(field);
    Some(fields)
}

/// Splits a WeChat Pay bill line: every field is prefixed with a backtick (so spreadsheets do
/// not turn long numbers into floats), which makes `,`` the separator; product names may
/// hold plain commas. A line without the backticks (a header) splits on commas.
pub(crate) fn split_backticked(line: &str) -> Vec<String> {
    match line.strip_prefix('`') {
        Some(rest) => rest.split(",`").map(str::to_string).collect(),
        None => line
            .split(',')
            .map(|f| f.strip_prefix('`').unwrap_or(f).to_string())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(text: &[u8]) -> Result<Vec<(u64, String)>, StatementError> {
        let mut r = LineReader::new(text);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().await? {
            out.push(l);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn lines_are_numbered_and_lose_their_breaks_and_bom() {
        let got = lines("\u{feff}a,b\r\nc\n\nlast".as_bytes()).await.unwrap();
        assert_eq!(
            got,
            vec![
                (1, "a,b".to_string()),
                (2, "c".to_string()),
                (3, String::new()),
                (4, "last".to_string())
            ]
        );
        assert!(lines(b"").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn long_lines_and_bad_bytes_are_errors_naming_the_line() {
        let mut text = b"ok\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 1));
        text.extend(b"\nmore\n");
        assert!(matches!(
            lines(&text).await,
            Err(StatementError::LineTooLong { line: 2, .. })
        ));
        // Exactly the limit is fine, with or without a CRLF.
        let mut text = vec![b'y'; MAX_LINE_BYTES];
        text.extend(b"\r\n");
        assert_eq!(lines(&text).await.unwrap()[0].1.len(), MAX_LINE_BYTES);
        assert!(matches!(
            lines(b"ok\n\xff\xfe\n").await,
            Err(StatementError::NotUtf8 { line: 2 })
        ));
    }

    #[test]
    fn csv_fields_follow_rfc_4180() {
        assert_eq!(split_csv("a,b,,c").unwrap(), ["a", "b", "", "c"]);
        assert_eq!(
            split_csv("\"x,y\",\"say \"\"hi\"\"\",\"two\nlines\"").unwrap(),
            ["x,y", "say \"hi\"", "two\nlines"]
        );
        assert_eq!(split_csv("").unwrap(), [""]);
        assert!(split_csv("\"open").is_none());
        assert!(split_csv("a\"b").is_none());
        assert!(split_csv("\"a\"b").is_none());
        assert!(quote_open("x,\"two"));
        assert!(!quote_open("x,\"two\nlines\""));
    }

    #[test]
    fn backticked_fields_keep_plain_commas() {
        assert_eq!(
            split_backticked("`2026-01-05 10:00:00,`Tea, green,`,`9.90"),
            ["2026-01-05 10:00:00", "Tea, green", "", "9.90"]
        );
        assert_eq!(
            split_backticked("总交易单数,应结订单总金额"),
            ["总交易单数", "应结订单总金额"]
        );
        assert_eq!(
            split_backticked("`交易时间,`商户号"),
            ["交易时间", "商户号"]
        );
    }
}
