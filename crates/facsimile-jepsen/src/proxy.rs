//! A TCP proxy that can black-hole its connections: while cut, it stops
//! forwarding in both directions without closing anything, as a network
//! partition does; bytes read meanwhile wait and flow on when it heals.
//! The fallback for partitions where network namespaces are unavailable.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; it stops accepting when dropped (open connections
/// end when their peers close).
pub struct Proxy {
    addr: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port of `bind_ip` and forwards to `target`.
    pub async fn start(bind_ip: &str, target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind((bind_ip, 0)).await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(watch::channel(false).0);
        let c = cut.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    // A connection attempted across the partition waits.
                    if c.subscribe().wait_for(|cut| !cut).await.is_err() {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, c.subscribe()), pipe(sr, cw, c.subscribe()));
                });
            }
        });
        Ok(Proxy { addr, cut, accept })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Black-holes (`true`) or heals (`false`) every connection.
    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if cut.wait_for(|c| !c).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_cut_proxy_holds_bytes_without_closing_and_delivers_them_when_healed() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 64];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                s.write_all(&buf[..n]).await.unwrap();
            }
        });
        let proxy = Proxy::start("127.0.0.1", target).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"a").await.unwrap();
        let mut one = [0u8; 1];
        c.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"a");

        proxy.set_cut(true);
        c.write_all(b"b").await.unwrap();
        // Nothing comes back and the connection stays open while cut.
        let waited = tokio::time::timeout(Duration::from_millis(300), c.read(&mut one)).await;
        assert!(waited.is_err(), "a byte crossed the cut: {waited:?}");
        proxy.set_cut(false);
        c.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"b");
    }
}
