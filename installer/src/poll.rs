//! Waiting for something to become ready: [`wait_until`] polls a probe with pauses that grow
//! from [`POLL_FIRST`] to [`POLL_MAX`], and [`NotReady`] says what the last probe saw.
//!
//! Limits: a probe runs to completion before the timeout is checked, so a probe that can hang
//! must bound itself.

use std::time::Duration;

/// Why a probe of [`wait_until`] is not satisfied yet (after the timeout, the last one is the
/// error).
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// What the probe saw, in words ("/readyz said …", "not registered: n1").
    #[error("{0}")]
    Seen(String),

    /// The question could not be asked; `what` names it.
    #[error("{what}: {source}")]
    Failed {
        what: String,
        #[source]
        source: crate::phases::Cause,
    },
}

impl NotReady {
    /// Asking `what` failed because of `source`.
    pub fn failed(what: impl Into<String>, source: impl Into<crate::phases::Cause>) -> Self {
        NotReady::Failed {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// The first pause of [`wait_until`]; each next one doubles, up to [`POLL_MAX`].
pub const POLL_FIRST: Duration = Duration::from_millis(50);

/// The longest pause between two probes of [`wait_until`]: what it waits for is usually seen
/// within this much of being ready (0.5 s cost a converged install's readiness report up to
/// half a second on its probe pods alone); every probe is one API request or one command on
/// an open SSH connection, so four a second are cheap.
pub const POLL_MAX: Duration = Duration::from_millis(250);

/// Polls `probe` until it returns `Ok`, or fails with its last error after `timeout`. The
/// pauses start short and grow to [`POLL_MAX`]: what is ready at once (a converged cluster) is
/// not kept waiting a second, what takes a while is not probed in a busy loop.
pub async fn wait_until<F, Fut, T, E>(timeout: Duration, mut probe: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let start = std::time::Instant::now();
    let mut pause = POLL_FIRST;
    loop {
        match probe().await {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= timeout => return Err(e),
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(POLL_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retries_until_ready_and_times_out_with_the_last_error() {
        let mut tries = 0;
        let got: Result<u32, NotReady> = wait_until(Duration::from_secs(5), || {
            tries += 1;
            let n = tries;
            async move {
                if n < 3 {
                    Err(NotReady::Seen(format!("try {n}")))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(got.unwrap(), 3);

        let mut tries = 0;
        let err = wait_until(Duration::from_millis(200), || {
            tries += 1;
            let n = tries;
            async move { Err::<(), _>(NotReady::Seen(format!("try {n}"))) }
        })
        .await
        .unwrap_err();
        assert!(tries >= 2, "probed {tries} times");
        assert_eq!(err.to_string(), format!("try {tries}"));
    }
}
