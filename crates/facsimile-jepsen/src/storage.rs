//! The fenced storage: a tiny TCP service holding counters that accepts a
//! read or a write only with a fencing token at least as high as every
//! token it accepted before for that counter (a read raises the highest
//! token too, so a holder whose lock passed on can neither read nor write
//! once the next holder has). It stands for the external resource a lock
//! holder works on; the runner serves it from its own process.
//!
//! A holder increments in two steps, a read and a later write of what it
//! read plus one, as a client of a real resource would: two holders of one
//! token working at once both read the same value, and one increment is
//! lost, which the lock checker sees.
//!
//! Protocol, one line each way: `READ <counter> <token>` and
//! `WRITE <counter> <token> <value>` are answered by `OK <value>` (the
//! value read, or written) or `STALE <highest>`.

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

/// What the storage answered to a read or a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Accepted: the value read, or the value written.
    Ok {
        /// That value.
        value: u64,
    },
    /// Refused: a higher token was accepted before.
    Stale {
        /// That token.
        highest: u64,
    },
}

/// A request to the storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `READ counter token`.
    Read {
        /// The counter.
        counter: u32,
        /// The fencing token.
        token: u64,
    },
    /// `WRITE counter token value`.
    Write {
        /// The counter.
        counter: u32,
        /// The fencing token.
        token: u64,
        /// The value to store.
        value: u64,
    },
}

impl Request {
    fn line(&self) -> String {
        match *self {
            Request::Read { counter, token } => format!("READ {counter} {token}\n"),
            Request::Write {
                counter,
                token,
                value,
            } => format!("WRITE {counter} {token} {value}\n"),
        }
    }
}

impl Storage {
    /// Applies a request: refused when its token is lower than one
    /// accepted before for the counter, else the token becomes the highest
    /// and the value is read or written.
    pub fn apply(&self, request: Request) -> Answer {
        let (Request::Read { counter, token } | Request::Write { counter, token, .. }) = request;
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let c = counters.entry(counter).or_default();
        if token < c.highest {
            return Answer::Stale { highest: c.highest };
        }
        c.highest = token;
        if let Request::Write { value, .. } = request {
            c.value = value;
        }
        Answer::Ok { value: c.value }
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
                Some(request) => match self.apply(request) {
                    Answer::Ok { value } => format!("OK {value}\n"),
                    Answer::Stale { highest } => format!("STALE {highest}\n"),
                },
                None => "ERR expected READ <counter> <token> or WRITE <counter> <token> <value>\n"
                    .to_string(),
            };
            w.write_all(answer.as_bytes()).await?;
        }
        Ok(())
    }
}

fn parse(line: &str) -> Option<Request> {
    let mut words = line.split_whitespace();
    let verb = words.next()?;
    let counter = words.next()?.parse().ok()?;
    let token = words.next()?.parse().ok()?;
    let request = match verb {
        "READ" => Request::Read { counter, token },
        "WRITE" => Request::Write {
            counter,
            token,
            value: words.next()?.parse().ok()?,
        },
        _ => return None,
    };
    words.next().is_none().then_some(request)
}

/// Why a request by a client has no certain answer.
#[derive(Debug)]
pub enum RequestError {
    /// The request was never sent: it certainly took no effect.
    NotSent(std::io::Error),
    /// Sent, but no answer came: it may have taken effect.
    NoAnswer(String),
}

/// How long a client waits to connect, then for the answer.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends `request` to the storage at `addr`; a connection that does not
/// open in time is `NotSent`, an answer that does not come in time is
/// `NoAnswer` (a partitioned client must not hang on SYN retries).
pub async fn request(addr: SocketAddr, request: Request) -> Result<Answer, RequestError> {
    let stream = match tokio::time::timeout(PATIENCE, TcpStream::connect(addr)).await {
        Ok(s) => s.map_err(RequestError::NotSent)?,
        Err(_) => return Err(RequestError::NotSent(std::io::ErrorKind::TimedOut.into())),
    };
    let exchange = async {
        let (r, mut w) = stream.into_split();
        w.write_all(request.line().as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(r).read_line(&mut line).await?;
        Ok::<_, std::io::Error>(line)
    };
    let line = match tokio::time::timeout(PATIENCE, exchange).await {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => return Err(RequestError::NoAnswer(e.to_string())),
        Err(_) => return Err(RequestError::NoAnswer("no answer in time".into())),
    };
    let mut words = line.split_whitespace();
    let parsed = match (words.next(), words.next(), words.next()) {
        (Some("OK"), Some(v), None) => v.parse().ok().map(|value| Answer::Ok { value }),
        (Some("STALE"), Some(h), None) => h.parse().ok().map(|highest| Answer::Stale { highest }),
        _ => None,
    };
    parsed.ok_or_else(|| RequestError::NoAnswer(format!("unexpected answer {line:?}")))
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
        let read = |counter, token| request(addr, Request::Read { counter, token });
        let write = |counter, token, value| {
            request(
                addr,
                Request::Write {
                    counter,
                    token,
                    value,
                },
            )
        };
        assert_eq!(read(1, 5).await.unwrap(), Answer::Ok { value: 0 });
        assert_eq!(write(1, 5, 1).await.unwrap(), Answer::Ok { value: 1 });
        // The next holder reads: the holder of token 5 may no longer write.
        assert_eq!(read(1, 7).await.unwrap(), Answer::Ok { value: 1 });
        assert_eq!(write(1, 5, 2).await.unwrap(), Answer::Stale { highest: 7 });
        assert_eq!(read(1, 5).await.unwrap(), Answer::Stale { highest: 7 });
        assert_eq!(write(1, 7, 2).await.unwrap(), Answer::Ok { value: 2 });
        // Another counter has its own tokens.
        assert_eq!(read(2, 1).await.unwrap(), Answer::Ok { value: 0 });
        assert_eq!(storage.values()[&1], 2);
    }

    #[test]
    fn two_holders_of_one_token_lose_an_increment() {
        // What the client does: read, then write what it read plus one.
        let storage = Storage::default();
        let read = |token| match storage.apply(Request::Read { counter: 0, token }) {
            Answer::Ok { value } => value,
            stale => panic!("{stale:?}"),
        };
        let (a, b) = (read(3), read(3));
        for v in [a, b] {
            storage.apply(Request::Write {
                counter: 0,
                token: 3,
                value: v + 1,
            });
        }
        assert_eq!(storage.values()[&0], 1, "one of two increments is lost");
    }

    #[test]
    fn malformed_requests_are_not_parsed() {
        assert_eq!(
            parse("READ 1 2"),
            Some(Request::Read {
                counter: 1,
                token: 2
            })
        );
        assert_eq!(
            parse("WRITE 1 2 3"),
            Some(Request::Write {
                counter: 1,
                token: 2,
                value: 3
            })
        );
        assert_eq!(parse("READ 1"), None);
        assert_eq!(parse("READ 1 2 3"), None);
        assert_eq!(parse("WRITE 1 2"), None);
        assert_eq!(parse("INC 1 2"), None);
        assert_eq!(parse("READ -1 2"), None);
    }
}
