//! Headless Chromium for the browser-level checks of the Temporal UI (`tests/tests/browser.rs`,
//! `tests/tests/ui_codec.rs`): Debian's `chromium`, installed by `scripts/install-browser.sh`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::scratch_dir;

/// How long the UI may take to show what a check waits for (UI start, visibility, page load).
const DEADLINE: Duration = Duration::from_secs(90);
/// One page load: Chromium's start, the SPA's API calls, rendering.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// The Chromium to drive: `$CHROMIUM`, else `chromium` on PATH. `None` (reason on stderr) when
/// there is none and the browser is not required; panics when it is (CI).
pub fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("CHROMIUM").map(PathBuf::from).or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let required = std::env::var_os("PAYFLOW_REQUIRE_BROWSER").is_some()
            || std::env::var("CI").is_ok_and(|v| v == "true");
        let why = "no chromium on PATH (install it with scripts/install-browser.sh: \
                   Debian's chromium package)";
        if required {
            panic!("the browser check of the Temporal UI is required in CI: {why}");
        }
        eprintln!("skipping the browser check of the Temporal UI: {why}");
    }
    found
}

/// Loads `url` in headless Chromium again and again until the rendered DOM satisfies `done`,
/// and returns that DOM; panics naming `what` after [`DEADLINE`]. Each load lets the page run
/// until its network is idle (virtual time), so the SPA's API answers are rendered; a load
/// takes seconds, which paces the retries.
pub async fn render_until(
    chromium: &Path,
    url: &str,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let end = tokio::time::Instant::now() + DEADLINE;
    let profiles = scratch_dir("chromium");
    let mut attempt = 0;
    loop {
        attempt += 1;
        let profile = profiles.join(format!("profile-{attempt}"));
        let dom = dump_dom(chromium, &profile, url).await;
        let _ = std::fs::remove_dir_all(&profile);
        if done(&dom) {
            return dom;
        }
        let mut tail = dom.len().saturating_sub(2_000);
        while !dom.is_char_boundary(tail) {
            tail += 1;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what} at {url} ({attempt} loads); last DOM ({} bytes), \
             its end: {}",
            dom.len(),
            &dom[tail..]
        );
    }
}

/// One headless page load: the DOM after the page's scripts ran.
async fn dump_dom(chromium: &Path, profile: &Path, url: &str) -> String {
    let mut cmd = tokio::process::Command::new(chromium);
    cmd.args([
        "--headless=new",
        "--disable-gpu",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--virtual-time-budget=15000",
        "--dump-dom",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = tokio::time::timeout(LOAD_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("chromium did not finish loading {url} in {LOAD_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", chromium.display()));
    // A page that is not up yet still exits 0 (with an error page); a failure is the browser's.
    assert!(
        out.status.success(),
        "chromium failed on {url} with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
