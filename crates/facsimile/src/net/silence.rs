//! Watching a connection for silence with one timer.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Tells when nothing was heard for a while. Its one timer is moved on only
/// when it fires: a timer armed and dropped for every frame took about 6%
/// of a busy relay client's samples.
pub(super) struct Silence {
    after: Duration,
    heard: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Silence {
    /// Watches for a silence of `after`, from now.
    pub(super) fn new(after: Duration) -> Silence {
        Silence {
            after,
            heard: Instant::now(),
            timer: Box::pin(tokio::time::sleep(after)),
        }
    }

    /// Something was heard just now.
    pub(super) fn heard(&mut self) {
        self.heard = Instant::now();
    }

    /// Resolves, to the silence it watches for, once nothing was heard
    /// that long. Dropping it unresolved leaves the timer as it is.
    pub(super) async fn elapsed(&mut self) -> Duration {
        loop {
            self.timer.as_mut().await;
            if self.heard.elapsed() >= self.after {
                return self.after;
            }
            let at = self.heard + self.after;
            self.timer.as_mut().reset(at);
        }
    }
}
