//! The fenced storage: a tiny TCP service holding counters that accepts a
//! write only with a fencing token at least as high as every token it
//! accepted before for that counter. It stands for the external resource a
//! lock holder writes to; the runner serves it from its own process.
//!
//! Protocol, one line each way: `INC <counter> <token>` is answered by
//! `OK <read> <wrote>` or `STALE <highest>`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A counter's state: the highest token accepted and its value.
#[derive(Debug, Default, Clone, Copy)]
struct Counter {
    highest: u64,
    value: u64,
}

/// The counters, shared by the connections.
#[derive(Debug, Default, Clone)]
pub struct Storage {
    counters: Arc<Mutex<HashMap<u32, Counter>>>,
}

/// What the storage answered to an increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Accepted: the value read and the value written.
    Ok {
        /// The value before.
        read: u64,
        /// The value after.
        wrote: u64,
    },
    /// Refused: a higher token was accepted before.
    Stale {
        /// That token.
        highest: u64,
    },
}

impl Storage {
    /// Applies `INC counter token`.
    pub fn increment(&self, counter: u32, token: u64) -> Answer {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let c = counters.entry(counter).or_default();
        if token < c.highest {
            return Answer::Stale { highest: c.highest };
        }
        c.highest = token;
        let read = c.value;
        c.value += 1;
        Answer::Ok {
            read,
            wrote: c.value,
        }
    }

    /// Every counter's value, by counter.
    pub fn values(&self) -> HashMap<u32, u64> {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        counters.iter().map(|(k, c)| (*k, c.value)).collect()
    }

    /// Serves the storage on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let storage = self.clone();
            tokio::spawn(async move {
                let _ = storage.connection(stream).await;
            });
        }
    }

    async fn connection(&self, stream: TcpStream) -> std::io::Result<()> {
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        while let Some(line) = lines.next_line().await? {
            let answer = match parse(&line) {
                Some((counter, token)) => match self.increment(counter, token) {
                    Answer::Ok { read, wrote } => format!("OK {read} {wrote}\n"),
                    Answer::Stale { highest } => format!("STALE {highest}\n"),
                },
                None => "ERR expected INC <counter> <token>\n".to_string(),
            };
            w.write_all(answer.as_bytes()).await?;
        }
        Ok(())
    }
}

fn parse(line: &str) -> Option<(u32, u64)> {
    let mut words = line.split_whitespace();
    if words.next()? != "INC" {
        return None;
    }
    let counter = words.next()?.parse().ok()?;
    let token = words.next()?.parse().ok()?;
    words.next().is_none().then_some((counter, token))
}

/// Why an increment by a client has no certain answer.
#[derive(Debug)]
pub enum IncError {
    /// The request was never sent: it certainly took no effect.
    NotSent(std::io::Error),
    /// Sent, but no answer came: it may have taken effect.
    NoAnswer(String),
}

/// How long a client waits to connect, then for the answer.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends `INC counter token` to the storage at `addr`; a connection that
/// does not open in time is `NotSent`, an answer that does not come in time
/// is `NoAnswer` (a partitioned client must not hang on SYN retries).
pub async fn increment(addr: SocketAddr, counter: u32, token: u64) -> Result<Answer, IncError> {
    let stream = match tokio::time::timeout(PATIENCE, TcpStream::connect(addr)).await {
        Ok(s) => s.map_err(IncError::NotSent)?,
        Err(_) => return Err(IncError::NotSent(std::io::ErrorKind::TimedOut.into())),
    };
    let exchange = async {
        let (r, mut w) = stream.into_split();
        w.write_all(format!("INC {counter} {token}\n").as_bytes())
            .await?;
        let mut line = String::new();
        BufReader::new(r).read_line(&mut line).await?;
        Ok::<_, std::io::Error>(line)
    };
    let line = match tokio::time::timeout(PATIENCE, exchange).await {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => return Err(IncError::NoAnswer(e.to_string())),
        Err(_) => return Err(IncError::NoAnswer("no answer in time".into())),
    };
    let mut words = line.split_whitespace();
    let parsed = match (words.next(), words.next(), words.next()) {
        (Some("OK"), Some(read), Some(wrote)) => read
            .parse()
            .ok()
            .zip(wrote.parse().ok())
            .map(|(read, wrote)| Answer::Ok { read, wrote }),
        (Some("STALE"), Some(h), None) => h.parse().ok().map(|highest| Answer::Stale { highest }),
        _ => None,
    };
    parsed.ok_or_else(|| IncError::NoAnswer(format!("unexpected answer {line:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_lower_than_one_accepted_is_refused_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let storage = Storage::default();
        tokio::spawn(storage.clone().serve(listener));
        let first = increment(addr, 1, 5).await.unwrap();
        assert_eq!(first, Answer::Ok { read: 0, wrote: 1 });
        assert_eq!(
            increment(addr, 1, 7).await.unwrap(),
            Answer::Ok { read: 1, wrote: 2 }
        );
        // The holder of token 5 woke up after token 7 was used.
        assert_eq!(
            increment(addr, 1, 5).await.unwrap(),
            Answer::Stale { highest: 7 }
        );
        // Another counter has its own tokens.
        assert_eq!(
            increment(addr, 2, 1).await.unwrap(),
            Answer::Ok { read: 0, wrote: 1 }
        );
        assert_eq!(storage.values()[&1], 2);
    }

    #[test]
    fn malformed_requests_are_not_parsed() {
        assert_eq!(parse("INC 1 2"), Some((1, 2)));
        assert_eq!(parse("INC 1"), None);
        assert_eq!(parse("INC 1 2 3"), None);
        assert_eq!(parse("DEC 1 2"), None);
        assert_eq!(parse("INC -1 2"), None);
    }
}
