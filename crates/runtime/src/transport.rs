//! TCP between peers: a handshake, then length-prefixed frames; optionally inside mutual TLS
//! ([`TransportOptions::tls`]: the TLS handshake first, then the same bytes).
//!
//! ```text
//! hello (dialer → listener, 28 bytes): magic "CNCDPEER" · protocol version u32 LE
//!                                      · cluster id u64 LE · sender node id u64 LE
//! answer (listener → dialer, 1 byte):  0 accepted, 1 bad magic, 2 unsupported version,
//!                                      3 other cluster
//! frame (dialer → listener, repeated): len u32 LE · payload (len ≤ max_frame_bytes)
//!
//! (version 2: the payload is the host's frame — a protocol message, a forwarded client
//! request, or the answer to one — where version 1 carried protocol messages only)
//! ```
//!
//! Each node dials every peer it sends to, so a connection carries one direction only and the
//! sender of every frame is the id it gave in its hello. Sends never block the node: each peer
//! has a bounded queue drained by one task that connects, reconnects with exponential backoff,
//! and drops what is queued while the peer is unreachable (consensus tolerates loss; the drops
//! are counted in [`HostMetrics::messages_dropped`]). Peer addresses can change at run time
//! ([`Transport::set_peer`]), e.g. when a membership change adds a node.
//!
//! Fault injection: frames to and from the peers in [`Transport::blocked_peers`] are dropped
//! (and counted) both when sending and when receiving, whatever they carry, while connections
//! stay up: a network partition as the protocols see it, healed by emptying the set.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use concord_core::NodeId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, error, info, warn};

use crate::metrics::{peer_labels, HostMetrics};
use crate::tls::PeerTls;

/// A peer connection: TCP, or TLS over TCP.
trait PeerStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> PeerStream for S {}

type Stream = Box<dyn PeerStream>;

/// The first bytes of a peer connection.
pub const PEER_MAGIC: [u8; 8] = *b"CNCDPEER";
/// The peer protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 3;
const HELLO_BYTES: usize = 28;
const ACCEPTED: u8 = 0;
const BAD_MAGIC: u8 = 1;
const BAD_VERSION: u8 = 2;
const OTHER_CLUSTER: u8 = 3;
/// How long a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Limits and timings of the peer transport.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// The largest frame sent or accepted; a larger one is dropped (sending) or closes the
    /// connection (receiving).
    pub max_frame_bytes: u32,
    /// Messages queued per peer; more are dropped.
    pub queue_capacity: usize,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay (the delay doubles up to it).
    pub backoff_max: Duration,
    /// How long one connection attempt (connect and handshake) may take.
    pub connect_timeout: Duration,
    /// Mutual TLS on every peer connection (`None`: plain TCP).
    pub tls: Option<PeerTls>,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            max_frame_bytes: 64 << 20,
            queue_capacity: 4096,
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            tls: None,
        }
    }
}

/// Who this node is on the wire.
#[derive(Clone, Debug)]
pub struct Identity {
    /// This node.
    pub id: NodeId,
    /// The cluster it belongs to; connections from other clusters are refused.
    pub cluster_id: ClusterId,
}

/// The cluster a node belongs to, as its hellos say and check. Known from the start, or, for a
/// node joining a running cluster it has never talked to, learned: the first peer to connect
/// names it, and from then on it is fixed (until then the node's own hellos are refused, so it
/// reaches nobody before a member has reached it). Cheap to clone; every clone is the same.
#[derive(Clone, Debug)]
pub struct ClusterId(Arc<RwLock<Option<u64>>>);

impl ClusterId {
    /// A known cluster.
    pub fn known(id: u64) -> Self {
        ClusterId(Arc::new(RwLock::new(Some(id))))
    }

    /// A cluster to learn from the first peer that connects.
    pub fn learned_from_peers() -> Self {
        ClusterId(Arc::new(RwLock::new(None)))
    }

    /// The cluster, once known.
    pub fn get(&self) -> Option<u64> {
        *self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts a peer's cluster: the same as ours, or the first one seen while ours is unknown.
    fn accept(&self, theirs: u64) -> Result<(), u64> {
        let mut ours = self.0.write().unwrap_or_else(|e| e.into_inner());
        match *ours {
            Some(ours) if ours != theirs => Err(ours),
            Some(_) => Ok(()),
            None => {
                info!(
                    cluster = theirs,
                    "learned the cluster's id from the first peer to connect"
                );
                *ours = Some(theirs);
                Ok(())
            }
        }
    }
}

/// Peers whose traffic is dropped both ways: a fault-injection hook shared by a transport and
/// whoever controls it ([`Transport::blocked_peers`], `NodeHandle::set_blocked_peers`). Cheap
/// to clone; every clone is the same set.
#[derive(Clone, Debug, Default)]
pub struct BlockedPeers {
    /// Whether the set is non-empty: the per-frame check takes no lock in the common case.
    any: Arc<AtomicBool>,
    peers: Arc<RwLock<BTreeSet<NodeId>>>,
}

impl BlockedPeers {
    /// Replaces the set (an empty one heals).
    pub fn set(&self, peers: impl IntoIterator<Item = NodeId>) {
        let mut current = self.peers.write().unwrap_or_else(|e| e.into_inner());
        *current = peers.into_iter().collect();
        self.any.store(!current.is_empty(), Ordering::Release);
    }

    /// The peers blocked now.
    pub fn get(&self) -> BTreeSet<NodeId> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether traffic with `peer` is dropped.
    pub fn contains(&self, peer: NodeId) -> bool {
        self.any.load(Ordering::Acquire)
            && self
                .peers
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&peer)
    }
}

struct Peer {
    queue: mpsc::Sender<Bytes>,
    address: watch::Sender<SocketAddr>,
    /// Whether the connection to the peer is up (set by its dialing task).
    connected: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

/// The peer transport of one node: an accept loop and one dialing task per peer.
pub struct Transport {
    identity: Identity,
    options: TransportOptions,
    metrics: HostMetrics,
    peers: BTreeMap<NodeId, Peer>,
    blocked: BlockedPeers,
    /// Told the peer's id each time an established connection to it fails.
    lost: mpsc::UnboundedSender<NodeId>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("identity", &self.identity)
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Starts accepting on `listener` (frames go to `inbound` as `(sender, payload)`) and
    /// dialing `peers`; each time an established connection to a peer fails (the peer crashed,
    /// closed it, or the network broke it), the peer's id goes to `lost`. Must run inside a
    /// tokio runtime.
    pub fn start(
        identity: Identity,
        options: TransportOptions,
        listener: TcpListener,
        peers: &BTreeMap<NodeId, SocketAddr>,
        inbound: mpsc::Sender<(NodeId, Bytes)>,
        lost: mpsc::UnboundedSender<NodeId>,
        metrics: HostMetrics,
    ) -> Transport {
        let blocked = BlockedPeers::default();
        let accept = tokio::spawn(accept_loop(
            listener,
            Accepting {
                cluster_id: identity.cluster_id.clone(),
                tls: options.tls.clone(),
                max_frame_bytes: options.max_frame_bytes,
                inbound,
                metrics: metrics.clone(),
                blocked: blocked.clone(),
            },
        ));
        let mut transport = Transport {
            identity,
            options,
            metrics,
            peers: BTreeMap::new(),
            blocked,
            lost,
            accept,
        };
        for (&id, &address) in peers {
            transport.set_peer(id, address);
        }
        transport
    }

    /// The peers whose frames are dropped both ways (initially none). Changing the set takes
    /// effect at the next frame sent or received.
    pub fn blocked_peers(&self) -> &BlockedPeers {
        &self.blocked
    }

    /// Queues `frame` for peer `to`; drops it (and counts the drop) when the queue is full, the
    /// peer has no address, or it is blocked ([`Transport::blocked_peers`]).
    pub fn send(&self, to: NodeId, frame: Bytes) {
        if self.blocked.contains(to) {
            self.metrics.dropped(to);
            return;
        }
        if frame.len() > self.options.max_frame_bytes as usize {
            warn!(
                peer = to,
                bytes = frame.len(),
                limit = self.options.max_frame_bytes,
                "dropping a message larger than the frame limit"
            );
            self.metrics.dropped(to);
            return;
        }
        match self.peers.get(&to) {
            Some(peer) => {
                if peer.queue.try_send(frame).is_err() {
                    self.metrics.dropped(to);
                }
            }
            None => {
                debug!(peer = to, "no address for peer; message dropped");
                self.metrics.dropped(to);
            }
        }
    }

    /// Sets (or changes) the address of peer `id`; a changed address is dialed at once.
    pub fn set_peer(&mut self, id: NodeId, address: SocketAddr) {
        if id == self.identity.id {
            return;
        }
        if let Some(peer) = self.peers.get(&id) {
            peer.address.send_if_modified(|current| {
                let changed = *current != address;
                *current = address;
                changed
            });
            return;
        }
        let (queue, receiver) = mpsc::channel(self.options.queue_capacity.max(1));
        let (address_sender, address_receiver) = watch::channel(address);
        let connected = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(dial_loop(
            Dialer {
                identity: self.identity.clone(),
                peer: id,
                options: self.options.clone(),
                metrics: self.metrics.clone(),
                connected: Arc::clone(&connected),
                lost: self.lost.clone(),
            },
            address_receiver,
            receiver,
        ));
        self.peers.insert(
            id,
            Peer {
                queue,
                address: address_sender,
                connected,
                task,
            },
        );
    }

    /// Whether the connection to `peer` is up: a frame sent now goes out on it (unless it
    /// fails meanwhile). False before the first connection, and while reconnecting.
    pub fn is_connected(&self, peer: NodeId) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| p.connected.load(Ordering::Acquire))
            && !self.blocked.contains(peer)
    }

    /// The peers this transport dials, with their addresses.
    pub fn peers(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.peers
            .iter()
            .map(|(&id, peer)| (id, *peer.address.borrow()))
            .collect()
    }

    /// Stops every task and closes every connection and the listener.
    pub async fn shutdown(self) {
        self.accept.abort();
        let _ = self.accept.await;
        for (_, peer) in self.peers {
            peer.task.abort();
            let _ = peer.task.await;
        }
    }
}

fn hello(identity: &Identity) -> [u8; HELLO_BYTES] {
    let mut hello = [0u8; HELLO_BYTES];
    hello[0..8].copy_from_slice(&PEER_MAGIC);
    hello[8..12].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    // Not known yet: 0, which members refuse until a member has reached this node.
    let cluster = identity.cluster_id.get().unwrap_or(0);
    hello[12..20].copy_from_slice(&cluster.to_le_bytes());
    hello[20..28].copy_from_slice(&identity.id.to_le_bytes());
    hello
}

/// Checks a hello: the sender's id, or the answer code and a reason.
fn check_hello(hello: &[u8; HELLO_BYTES], cluster_id: &ClusterId) -> Result<NodeId, (u8, String)> {
    let word = |range: std::ops::Range<usize>| {
        let mut bytes = [0u8; 8];
        bytes[..range.len()].copy_from_slice(&hello[range]);
        u64::from_le_bytes(bytes)
    };
    if hello[0..8] != PEER_MAGIC {
        return Err((BAD_MAGIC, "not a Concord peer (bad magic)".into()));
    }
    let version = word(8..12) as u32;
    if version != PROTOCOL_VERSION {
        return Err((
            BAD_VERSION,
            format!("peer speaks protocol version {version}, this node {PROTOCOL_VERSION}"),
        ));
    }
    let theirs = word(12..20);
    if let Err(ours) = cluster_id.accept(theirs) {
        return Err((
            OTHER_CLUSTER,
            format!("peer belongs to cluster {theirs}, this node to cluster {ours}"),
        ));
    }
    Ok(word(20..28))
}

/// What every accepted connection is served with.
#[derive(Clone)]
struct Accepting {
    cluster_id: ClusterId,
    tls: Option<PeerTls>,
    max_frame_bytes: u32,
    inbound: mpsc::Sender<(NodeId, Bytes)>,
    metrics: HostMetrics,
    blocked: BlockedPeers,
}

async fn accept_loop(listener: TcpListener, accepting: Accepting) {
    // Dropping the set (when this task is aborted) aborts every connection task.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    connections.spawn(serve_connection(stream, remote, accepting.clone()));
                }
                Err(error) => {
                    warn!(%error, "accepting a peer connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, remote: SocketAddr, accepting: Accepting) {
    let Accepting {
        cluster_id,
        tls,
        max_frame_bytes,
        inbound,
        metrics,
        blocked,
    } = accepting;
    let _ = stream.set_nodelay(true);
    let mut stream: Stream = match tls {
        None => Box::new(stream),
        Some(tls) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await {
                Ok(Ok(stream)) => Box::new(stream),
                Ok(Err(error)) => {
                    warn!(%remote, %error, "refused a peer connection: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    warn!(%remote, "peer connection did not finish its TLS handshake in time; closed");
                    return;
                }
            }
        }
    };
    let mut hello = [0u8; HELLO_BYTES];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut hello)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            debug!(%remote, %error, "peer connection closed during the handshake");
            return;
        }
        Err(_) => {
            warn!(%remote, "peer connection sent no handshake in time; closed");
            return;
        }
    }
    let from = match check_hello(&hello, &cluster_id) {
        Ok(from) => from,
        // A joining node dials before it knows the cluster (its hello names cluster 0): it is
        // refused until a member reaches it, as planned.
        Err((code, reason)) if hello[12..20] == [0; 8] => {
            debug!(%remote, "refused a joining node's connection until it is reached: {reason}");
            let _ = stream.write_all(&[code]).await;
            return;
        }
        Err((code, reason)) => {
            error!(%remote, "rejected a peer connection: {reason}");
            let _ = stream.write_all(&[code]).await;
            return;
        }
    };
    if stream.write_all(&[ACCEPTED]).await.is_err() {
        return;
    }
    debug!(peer = from, %remote, "accepted a peer connection");
    let received = metrics
        .messages_received
        .get_or_create(&peer_labels(from))
        .clone();
    let mut reader = BufReader::new(stream);
    loop {
        let len = match reader.read_u32_le().await {
            Ok(len) => len,
            Err(_) => return,
        };
        if len > max_frame_bytes {
            error!(
                peer = from,
                %remote,
                len,
                limit = max_frame_bytes,
                "peer sent a frame over the limit; connection closed"
            );
            return;
        }
        let mut payload = vec![0u8; len as usize];
        if reader.read_exact(&mut payload).await.is_err() {
            return;
        }
        received.inc();
        if blocked.contains(from) {
            metrics.dropped(from);
            continue;
        }
        if inbound.send((from, Bytes::from(payload))).await.is_err() {
            return;
        }
    }
}

/// Why a connection to a peer ended.
enum Ended {
    /// The transport is gone.
    Closed,
    /// The connection failed.
    Failed(std::io::Error),
}

/// What the dialing task of one peer works with.
struct Dialer {
    identity: Identity,
    peer: NodeId,
    options: TransportOptions,
    metrics: HostMetrics,
    connected: Arc<AtomicBool>,
    lost: mpsc::UnboundedSender<NodeId>,
}

async fn dial_loop(
    dialer: Dialer,
    mut address: watch::Receiver<SocketAddr>,
    mut queue: mpsc::Receiver<Bytes>,
) {
    let Dialer {
        identity,
        peer,
        options,
        metrics,
        connected,
        lost,
    } = dialer;
    let mut backoff = options.backoff_min;
    let mut connected_before = false;
    loop {
        // What queued up while disconnected is stale: drop it.
        while queue.try_recv().is_ok() {
            metrics.dropped(peer);
        }
        let target = *address.borrow_and_update();
        match connect(&identity, target, &options).await {
            Ok(stream) => {
                info!(peer, address = %target, "connected to peer");
                connected_before = true;
                backoff = options.backoff_min;
                connected.store(true, Ordering::Release);
                let ended = pump(stream, &mut queue, peer, &metrics).await;
                connected.store(false, Ordering::Release);
                match ended {
                    Ended::Closed => return,
                    Ended::Failed(error) => {
                        info!(peer, address = %target, %error, "peer connection lost");
                        let _ = lost.send(peer);
                    }
                }
            }
            Err(ConnectError::Rejected(reason)) => {
                error!(peer, address = %target, "peer refused the handshake: {reason}");
            }
            Err(ConnectError::ClusterNotKnown) => {
                debug!(peer, address = %target, "not dialing out before a member has reached this joining node");
            }
            Err(ConnectError::Io(error)) => {
                if connected_before {
                    debug!(peer, address = %target, %error, "reconnecting to peer failed");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            changed = address.changed() => {
                if changed.is_err() {
                    return;
                }
                backoff = options.backoff_min;
                continue;
            }
        }
        backoff = (backoff * 2).min(options.backoff_max);
    }
}

enum ConnectError {
    Io(std::io::Error),
    Rejected(String),
    /// This node joins a cluster it has not learned yet: its hellos are refused until a member
    /// has reached it.
    ClusterNotKnown,
}

async fn connect(
    identity: &Identity,
    address: SocketAddr,
    options: &TransportOptions,
) -> Result<Stream, ConnectError> {
    let attempt = async {
        let stream = TcpStream::connect(address)
            .await
            .map_err(ConnectError::Io)?;
        stream.set_nodelay(true).map_err(ConnectError::Io)?;
        let mut stream: Stream = match &options.tls {
            None => Box::new(stream),
            Some(tls) => {
                let name = rustls::pki_types::ServerName::IpAddress(address.ip().into());
                let stream = tls.connector.connect(name, stream).await.map_err(|error| {
                    ConnectError::Rejected(format!("TLS handshake failed: {error}"))
                })?;
                Box::new(stream)
            }
        };
        let cluster = identity.cluster_id.get();
        stream
            .write_all(&hello(identity))
            .await
            .map_err(ConnectError::Io)?;
        let answer = stream.read_u8().await.map_err(ConnectError::Io)?;
        match answer {
            ACCEPTED => Ok(stream),
            BAD_MAGIC => Err(ConnectError::Rejected("bad magic".into())),
            BAD_VERSION => Err(ConnectError::Rejected(format!(
                "it does not speak protocol version {PROTOCOL_VERSION}"
            ))),
            OTHER_CLUSTER => Err(match cluster {
                Some(ours) => {
                    ConnectError::Rejected(format!("it belongs to another cluster than {ours}"))
                }
                None => ConnectError::ClusterNotKnown,
            }),
            other => Err(ConnectError::Rejected(format!("unknown answer {other}"))),
        }
    };
    match tokio::time::timeout(options.connect_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connect timed out",
        ))),
    }
}

/// Writes queued frames to the connection until it fails or the queue closes; frames queued
/// together go out in one flush.
async fn pump(
    stream: Stream,
    queue: &mut mpsc::Receiver<Bytes>,
    peer: NodeId,
    metrics: &HostMetrics,
) -> Ended {
    let sent = metrics
        .messages_sent
        .get_or_create(&peer_labels(peer))
        .clone();
    let (mut reader, writer) = tokio::io::split(stream);
    let mut writer = BufWriter::new(writer);
    let mut closed_probe = [0u8; 1];
    loop {
        let frame = tokio::select! {
            frame = queue.recv() => match frame {
                Some(frame) => frame,
                None => return Ended::Closed,
            },
            // The listener never writes after the handshake: a read returning means it closed.
            read = reader.read(&mut closed_probe) => {
                return Ended::Failed(match read {
                    Ok(_) => std::io::Error::new(std::io::ErrorKind::ConnectionReset, "closed by peer"),
                    Err(error) => error,
                });
            }
        };
        let mut batch = vec![frame];
        while batch.len() < 1024 {
            match queue.try_recv() {
                Ok(frame) => batch.push(frame),
                Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        let mut result = Ok(());
        for frame in &batch {
            result = async {
                writer.write_u32_le(frame.len() as u32).await?;
                writer.write_all(frame).await
            }
            .await;
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = writer.flush().await;
        }
        match result {
            Ok(()) => {
                sent.inc_by(count);
            }
            Err(error) => {
                for _ in 0..count {
                    metrics.dropped(peer);
                }
                return Ended::Failed(error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn listener() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        (listener, address)
    }

    fn fast() -> TransportOptions {
        TransportOptions {
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(50),
            ..TransportOptions::default()
        }
    }

    /// Node `id` of cluster `cluster_id` on `listener`, dialing `peers`; with what it receives.
    fn start(
        id: NodeId,
        cluster_id: u64,
        listener: TcpListener,
        peers: &[(NodeId, SocketAddr)],
        metrics: HostMetrics,
    ) -> (Transport, mpsc::Receiver<(NodeId, Bytes)>) {
        start_with(id, cluster_id, listener, peers, metrics, fast())
    }

    /// [`start`] with other transport options.
    fn start_with(
        id: NodeId,
        cluster_id: u64,
        listener: TcpListener,
        peers: &[(NodeId, SocketAddr)],
        metrics: HostMetrics,
        options: TransportOptions,
    ) -> (Transport, mpsc::Receiver<(NodeId, Bytes)>) {
        let (inbound, received) = mpsc::channel(64);
        let peers = peers.iter().copied().collect();
        let (lost, _) = mpsc::unbounded_channel();
        let transport = Transport::start(
            Identity {
                id,
                cluster_id: ClusterId::known(cluster_id),
            },
            options,
            listener,
            &peers,
            inbound,
            lost,
            metrics,
        );
        (transport, received)
    }

    #[tokio::test]
    async fn frames_arrive_in_order_with_the_sender_id() {
        let (listener_a, _) = listener().await;
        let (listener_b, address_b) = listener().await;
        let (a, _received_a) = start(1, 7, listener_a, &[(2, address_b)], HostMetrics::default());
        let (b, mut received_b) = start(2, 7, listener_b, &[], HostMetrics::default());
        // Messages sent before the connection is up may be dropped: resend until one arrives.
        let first = loop {
            a.send(2, Bytes::from_static(b"hello"));
            match tokio::time::timeout(Duration::from_millis(100), received_b.recv()).await {
                Ok(Some(frame)) => break frame,
                _ => continue,
            }
        };
        assert_eq!(first, (1, Bytes::from_static(b"hello")));
        while let Ok(frame) = received_b.try_recv() {
            assert_eq!(frame.1, Bytes::from_static(b"hello"));
        }
        for i in 0u8..100 {
            a.send(2, Bytes::from(vec![i; 1 + i as usize]));
        }
        for i in 0u8..100 {
            let (from, frame) = tokio::time::timeout(Duration::from_secs(10), received_b.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(from, 1);
            assert_eq!(frame, Bytes::from(vec![i; 1 + i as usize]));
        }
        a.shutdown().await;
        b.shutdown().await;
    }

    /// Node `id` of cluster 7 with `tls` (or plain TCP).
    fn start_tls(
        id: NodeId,
        listener: TcpListener,
        peers: &[(NodeId, SocketAddr)],
        tls: Option<PeerTls>,
    ) -> (Transport, mpsc::Receiver<(NodeId, Bytes)>) {
        let options = TransportOptions { tls, ..fast() };
        start_with(id, 7, listener, peers, HostMetrics::default(), options)
    }

    #[tokio::test]
    async fn mutual_tls_carries_frames_between_members_of_one_ca_and_refuses_others() {
        use crate::tls::test_pki::TestCa;
        use crate::tls::{PeerTls, TlsFiles};
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path(), "peers");
        let tls = |name: &str, ca: &TestCa| {
            let (cert, key) = ca.leaf(name);
            PeerTls::new(&TlsFiles {
                cert,
                key,
                trusted_ca: Some(ca.ca_file()),
                client_cert_auth: true,
            })
            .unwrap()
        };
        let (listener_b, address_b) = listener().await;
        let (b, mut received_b) = start_tls(2, listener_b, &[], Some(tls("b", &ca)));
        let (listener_a, _) = listener().await;
        let (a, _) = start_tls(1, listener_a, &[(2, address_b)], Some(tls("a", &ca)));
        assert!(arrives(&a, 2, &mut received_b, b"over tls").await);

        // A member whose certificate another CA signed, and one without TLS, get nothing in.
        let other = TestCa::new(dir.path(), "other");
        let (listener_c, _) = listener().await;
        let (c, _) = start_tls(3, listener_c, &[(2, address_b)], Some(tls("c", &other)));
        let (listener_d, _) = listener().await;
        let (d, _) = start_tls(4, listener_d, &[(2, address_b)], None);
        for _ in 0..20 {
            c.send(2, Bytes::from_static(b"forged"));
            d.send(2, Bytes::from_static(b"plain"));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while let Ok((from, frame)) = received_b.try_recv() {
            assert_eq!((from, frame.as_ref()), (1, b"over tls".as_slice()));
        }
        for transport in [a, b, c, d] {
            transport.shutdown().await;
        }
    }

    #[tokio::test]
    async fn a_peer_of_another_cluster_is_refused() {
        let (listener_a, _) = listener().await;
        let (listener_b, address_b) = listener().await;
        let metrics = HostMetrics::default();
        let (a, _received_a) = start(1, 7, listener_a, &[(2, address_b)], metrics.clone());
        let (b, mut received_b) = start(2, 8, listener_b, &[], HostMetrics::default());
        for _ in 0..20 {
            a.send(2, Bytes::from_static(b"x"));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(received_b.try_recv().is_err(), "nothing crosses clusters");
        assert!(
            metrics
                .messages_dropped
                .get_or_create(&peer_labels(2))
                .get()
                > 0
        );
        a.shutdown().await;
        b.shutdown().await;
    }

    /// Sends `frame` from `from` until one arrives at `received` within a second, or gives up.
    async fn arrives(
        from: &Transport,
        to: NodeId,
        received: &mut mpsc::Receiver<(NodeId, Bytes)>,
        frame: &'static [u8],
    ) -> bool {
        for _ in 0..20 {
            from.send(to, Bytes::from_static(frame));
            if let Ok(Some((_, got))) =
                tokio::time::timeout(Duration::from_millis(50), received.recv()).await
            {
                if got == frame {
                    return true;
                }
            }
        }
        false
    }

    #[tokio::test]
    async fn blocked_peers_lose_frames_both_ways_until_healed() {
        let (listener_a, address_a) = listener().await;
        let (listener_b, address_b) = listener().await;
        let (a, mut received_a) =
            start(1, 7, listener_a, &[(2, address_b)], HostMetrics::default());
        let (b, mut received_b) =
            start(2, 7, listener_b, &[(1, address_a)], HostMetrics::default());
        assert!(arrives(&a, 2, &mut received_b, b"before").await);
        assert!(arrives(&b, 1, &mut received_a, b"before").await);

        // Node 1 blocks node 2: neither its own sends nor what node 2 sends get through.
        a.blocked_peers().set([2]);
        assert_eq!(a.blocked_peers().get(), BTreeSet::from([2]));
        while received_a.try_recv().is_ok() {}
        while received_b.try_recv().is_ok() {}
        assert!(!arrives(&a, 2, &mut received_b, b"outgoing").await);
        assert!(!arrives(&b, 1, &mut received_a, b"incoming").await);

        // Healed: both directions work again.
        a.blocked_peers().set([]);
        assert!(arrives(&a, 2, &mut received_b, b"after").await);
        assert!(arrives(&b, 1, &mut received_a, b"after").await);
        a.shutdown().await;
        b.shutdown().await;
    }

    #[test]
    fn the_hello_names_version_cluster_and_sender() {
        let hello = hello(&Identity {
            id: 3,
            cluster_id: ClusterId::known(9),
        });
        let nine = ClusterId::known(9);
        assert_eq!(check_hello(&hello, &nine), Ok(3));
        let ten = ClusterId::known(10);
        assert_eq!(check_hello(&hello, &ten).unwrap_err().0, OTHER_CLUSTER);
        let mut bad = hello;
        bad[0] = b'X';
        assert_eq!(check_hello(&bad, &nine).unwrap_err().0, BAD_MAGIC);
        let mut future = hello;
        future[8..12].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
        assert_eq!(check_hello(&future, &nine).unwrap_err().0, BAD_VERSION);
    }

    #[test]
    fn a_joining_node_learns_its_cluster_from_the_first_peer_and_keeps_it() {
        let joining = ClusterId::learned_from_peers();
        let own = hello(&Identity {
            id: 4,
            cluster_id: joining.clone(),
        });
        // Before a member has reached it, its own hello names no cluster: members refuse it.
        assert_eq!(
            check_hello(&own, &ClusterId::known(9)).unwrap_err().0,
            OTHER_CLUSTER
        );
        let from = |cluster: u64| {
            hello(&Identity {
                id: 1,
                cluster_id: ClusterId::known(cluster),
            })
        };
        assert_eq!(check_hello(&from(9), &joining), Ok(1));
        assert_eq!(joining.get(), Some(9));
        assert_eq!(
            check_hello(&from(10), &joining).unwrap_err().0,
            OTHER_CLUSTER
        );
        assert_eq!(check_hello(&from(9), &joining), Ok(1));
        let own = hello(&Identity {
            id: 4,
            cluster_id: joining,
        });
        assert_eq!(check_hello(&own, &ClusterId::known(9)), Ok(4));
    }
}
