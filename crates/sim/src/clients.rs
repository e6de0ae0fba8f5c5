//! The client side of a [`Simulation`]: requests handed in directly ([`Simulation::submit`])
//! or by the workload's clients, and the replies on their way back.

use concord_core::{Node, NodeId, RequestId, Time};

use crate::engine::{Reply, Simulation};
use crate::error::SimError;
use crate::event::Event;
use crate::workload::{Next, Workload, WORKLOAD_REQUEST_BASE};

impl<N: Node> Simulation<N> {
    /// Hands `request` straight to node `id` now (no client network); the reply shows up in
    /// [`Simulation::take_replies`] once released.
    pub fn submit(&mut self, id: NodeId, request: N::Request) -> Result<RequestId, SimError> {
        self.check_node(id)?;
        let request_id = self.next_request;
        self.next_request += 1;
        self.queue.push(
            self.now,
            Event::RequestArrive {
                home: id,
                node: id,
                id: request_id,
                request,
            },
        );
        Ok(request_id)
    }

    /// Replies to [`Simulation::submit`] requests released so far.
    pub fn take_replies(&mut self) -> Vec<Reply<N::Response>> {
        std::mem::take(&mut self.replies)
    }

    /// Sends `message` from `from` to `to` through the network, as if `from` had sent it.
    pub fn inject_message(
        &mut self,
        from: NodeId,
        to: NodeId,
        message: N::Message,
    ) -> Result<(), SimError> {
        self.check_node(from)?;
        self.check_node(to)?;
        self.transmit(from, to, message);
        Ok(())
    }

    pub(crate) fn workload_mut(&mut self) -> &mut Workload<N> {
        self.workload
            .as_mut()
            .expect("client events are only scheduled by an attached workload")
    }

    /// Hands a client event to the workload and carries out what follows; traces the history
    /// events it records.
    pub(crate) fn client_event(
        &mut self,
        event: impl FnOnce(&mut Workload<N>, Time) -> Next<N::Request>,
    ) {
        let recorded = self.history().events.len();
        let now = self.now;
        let next = event(self.workload_mut(), now);
        self.client_next(next);
        if self.trace.is_some() {
            let new: Vec<String> = self.history().events[recorded..]
                .iter()
                .map(|op| serde_json::to_string(op).unwrap_or_default())
                .collect();
            for line in new {
                self.trace_line(|| format!("client {line}"));
            }
        }
    }

    /// Carries out what a client wants next.
    pub(crate) fn client_next(&mut self, mut next: Next<N::Request>) {
        loop {
            match next {
                Next::Idle => return,
                Next::Wake { client, at } => {
                    self.queue.push(at, Event::ClientWake { client });
                    return;
                }
                Next::Send(outbound) => {
                    match self.network.client_latency(outbound.home, outbound.target) {
                        Some(latency) => {
                            let timeout = self.workload_mut().config().request_timeout;
                            let id = outbound.id;
                            self.queue.push(
                                self.now + latency,
                                Event::RequestArrive {
                                    home: outbound.home,
                                    node: outbound.target,
                                    id,
                                    request: outbound.request,
                                },
                            );
                            // Every timeout has the same length: they expire in push order.
                            self.queue
                                .push_fifo(self.now + timeout, Event::RequestTimeout { id });
                            return;
                        }
                        None => {
                            let now = self.now;
                            next = self.workload_mut().on_unreachable(outbound.id, now);
                        }
                    }
                }
            }
        }
    }

    /// Sends a reply from `node` to the client that made request `id`.
    pub(crate) fn reply(&mut self, node: NodeId, id: RequestId, response: N::Response) {
        if id < WORKLOAD_REQUEST_BASE {
            self.replies.push(Reply {
                id,
                node,
                response,
                time: self.now,
            });
            return;
        }
        let Some(home) = self.workload.as_ref().and_then(|w| w.home_of(id)) else {
            return;
        };
        if let Some(latency) = self.network.client_latency(node, home) {
            self.queue.push(
                self.now + latency,
                Event::ResponseArrive {
                    home,
                    id,
                    from: node,
                    response,
                },
            );
        }
    }
}
