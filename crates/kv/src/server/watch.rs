//! etcd's Watch service: one bidirectional stream carries many watchers; each is fed from the
//! local store's event history whenever this node applies new entries.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use super::convert::event_to_pb;
use super::Shared;
use crate::pb::etcdserverpb as pb;
use crate::{EventKind, KvError, Revision};

/// Events per response; a longer backlog goes out in several.
const EVENTS_PER_RESPONSE: usize = 1000;
/// How often watchers that asked for progress notifications get one.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(60);

/// The Watch service of one node.
pub(crate) struct WatchService(pub(crate) Arc<Shared>);

struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// The first revision not yet delivered.
    next: Revision,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
}

pub(crate) type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        open(&self.0, request.into_inner()).await.map(Response::new)
    }
}

/// Serves the watch requests of `inbound` (a gRPC stream, or the JSON gateway's) until it
/// ends or the answers are no longer read.
pub(crate) async fn open(
    shared: &Arc<Shared>,
    inbound: impl Stream<Item = Result<pb::WatchRequest, Status>> + Send + Unpin + 'static,
) -> Result<WatchStream, Status> {
    shared.check_member().await?;
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(serve_stream(Arc::clone(shared), inbound, sender));
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

type Sender = mpsc::Sender<Result<pb::WatchResponse, Status>>;

async fn serve_stream(
    shared: Arc<Shared>,
    mut inbound: impl Stream<Item = Result<pb::WatchRequest, Status>> + Unpin,
    out: Sender,
) {
    let mut applied = shared.handle.watch_applied();
    let mut watchers: BTreeMap<i64, Watcher> = BTreeMap::new();
    let mut next_id: i64 = 0;
    let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
    progress.tick().await;
    loop {
        tokio::select! {
            message = inbound.next() => {
                let message = match message {
                    Some(Ok(message)) => message,
                    // A request that could not be read ends the stream, with why.
                    Some(Err(status)) => {
                        let _ = out.send(Err(status)).await;
                        break;
                    }
                    None => break,
                };
                let result = handle_request(&shared, message, &mut watchers, &mut next_id, &out).await;
                if result.is_err() {
                    break;
                }
            }
            changed = applied.changed() => {
                if changed.is_err() {
                    let _ = out.send(Err(Status::unavailable("etcdserver: server stopped"))).await;
                    break;
                }
                if deliver(&shared, &mut watchers, &out).await.is_err() {
                    break;
                }
            }
            _ = progress.tick() => {
                let revision = current_revision(&shared).await;
                for (&id, watcher) in &watchers {
                    if watcher.progress_notify && send(&out, response(&shared, id, revision)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn response(shared: &Shared, watch_id: i64, revision: Revision) -> pb::WatchResponse {
    pb::WatchResponse {
        header: shared.header_info().header(revision),
        watch_id,
        ..Default::default()
    }
}

async fn send(out: &Sender, response: pb::WatchResponse) -> Result<(), ()> {
    out.send(Ok(response)).await.map_err(|_| ())
}

async fn current_revision(shared: &Shared) -> Revision {
    shared
        .with_store(|store| store.revision())
        .await
        .unwrap_or_default()
}

async fn handle_request(
    shared: &Arc<Shared>,
    message: pb::WatchRequest,
    watchers: &mut BTreeMap<i64, Watcher>,
    next_id: &mut i64,
    out: &Sender,
) -> Result<(), ()> {
    use pb::watch_request::RequestUnion;
    match message.request_union {
        Some(RequestUnion::CreateRequest(create)) => {
            let revision = current_revision(shared).await;
            let id = if create.watch_id != 0 {
                if watchers.contains_key(&create.watch_id) {
                    let mut refused = response(shared, create.watch_id, revision);
                    refused.created = true;
                    refused.canceled = true;
                    refused.cancel_reason = "etcdserver: watch ID is already in use".into();
                    return send(out, refused).await;
                }
                create.watch_id
            } else {
                while watchers.contains_key(next_id) {
                    *next_id += 1;
                }
                *next_id
            };
            let filters: Vec<i32> = create.filters.clone();
            let watcher = Watcher {
                next: if create.start_revision > 0 {
                    create.start_revision
                } else {
                    revision + 1
                },
                key: create.key,
                range_end: create.range_end,
                prev_kv: create.prev_kv,
                no_put: filters.contains(&(pb::watch_create_request::FilterType::Noput as i32)),
                no_delete: filters
                    .contains(&(pb::watch_create_request::FilterType::Nodelete as i32)),
                progress_notify: create.progress_notify,
            };
            let mut created = response(shared, id, revision);
            created.created = true;
            send(out, created).await?;
            watchers.insert(id, watcher);
            deliver(shared, watchers, out).await
        }
        Some(RequestUnion::CancelRequest(cancel)) => {
            if watchers.remove(&cancel.watch_id).is_some() {
                let revision = current_revision(shared).await;
                let mut canceled = response(shared, cancel.watch_id, revision);
                canceled.canceled = true;
                send(out, canceled).await?;
            }
            Ok(())
        }
        Some(RequestUnion::ProgressRequest(_)) => {
            let revision = current_revision(shared).await;
            // etcd answers a progress request with watch id -1 when it concerns every watcher.
            send(out, response(shared, -1, revision)).await
        }
        None => Ok(()),
    }
}

/// Sends every watcher the events it has not seen yet.
async fn deliver(
    shared: &Arc<Shared>,
    watchers: &mut BTreeMap<i64, Watcher>,
    out: &Sender,
) -> Result<(), ()> {
    let mut canceled = Vec::new();
    for (&id, watcher) in watchers.iter_mut() {
        let key = watcher.key.clone();
        let range_end = watcher.range_end.clone();
        let from = watcher.next;
        let prev_kv = watcher.prev_kv;
        let Ok((revision, events)) = shared
            .with_store(move |store| {
                let revision = store.revision();
                if from > revision {
                    return (revision, Ok(Vec::new()));
                }
                (revision, store.events(from, &key, &range_end, prev_kv))
            })
            .await
        else {
            return Err(());
        };
        match events {
            Ok(events) => {
                watcher.next = watcher.next.max(revision + 1);
                let events: Vec<_> = events
                    .into_iter()
                    .filter(|event| match event.kind {
                        EventKind::Put => !watcher.no_put,
                        EventKind::Delete => !watcher.no_delete,
                    })
                    .map(event_to_pb)
                    .collect();
                for chunk in events.chunks(EVENTS_PER_RESPONSE) {
                    let mut batch = response(shared, id, revision);
                    batch.events = chunk.to_vec();
                    send(out, batch).await?;
                }
            }
            Err(KvError::Compacted { compact_revision }) => {
                let mut cancel = response(shared, id, revision);
                cancel.canceled = true;
                cancel.compact_revision = compact_revision;
                cancel.cancel_reason =
                    "etcdserver: mvcc: required revision has been compacted".into();
                send(out, cancel).await?;
                canceled.push(id);
            }
            Err(error) => {
                let mut cancel = response(shared, id, revision);
                cancel.canceled = true;
                cancel.cancel_reason = error.to_string();
                send(out, cancel).await?;
                canceled.push(id);
            }
        }
    }
    for id in canceled {
        watchers.remove(&id);
    }
    Ok(())
}
