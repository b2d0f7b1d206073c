//! Group commit: one writer thread applies every pending job of a queue in
//! one go, then answers each caller.
//!
//! A durable sled write costs a transaction and a flush (a sealed log
//! buffer written by sled's IO threads, then fsync). Done per caller, N
//! concurrent answers cost N of each; through a [`GroupCommit`] they cost
//! one per batch: while the writer applies and flushes one batch, the next
//! callers queue, and the writer takes all of them at once. Nobody waits
//! for a timer: a lone caller is applied at once, and a batch grows only
//! with the load.
//!
//! The guarantee is the one of a write of its own: a caller is answered
//! only after the `apply` that included its job has returned, so when
//! `apply` flushes, the flush started after the job was written. If `apply`
//! fails, every caller of that batch gets the error.
//!
//! The queue is bounded ([`GroupCommit::spawn`]'s `capacity`): a caller
//! finding it full waits for room (back-pressure); no job is dropped. The
//! writer is a plain thread, since `apply` blocks (sled). It belongs to the
//! [`GroupCommit`]: dropping it closes the queue, the writer applies what
//! is still queued (jobs whose callers gave up are still written, as a
//! write started in place would have been) and exits, and the drop waits
//! for it.

use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

/// The writer is gone: it panicked, or the [`GroupCommit`] is being
/// dropped. Whether the job was applied is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the group-commit writer has stopped")]
pub struct Stopped;

/// For the sled stores' writers, whose batches fail with sled's error.
impl From<Stopped> for sled::Error {
    fn from(stopped: Stopped) -> Self {
        sled::Error::Io(std::io::Error::other(stopped))
    }
}

/// A job and the caller waiting for its batch's result.
struct Pending<J, E> {
    job: J,
    done: oneshot::Sender<Result<(), E>>,
}

/// A queue of jobs applied in batches by its own writer thread.
pub struct GroupCommit<J, E> {
    /// `None` only while dropping (closing the queue stops the writer).
    queue: Option<mpsc::Sender<Pending<J, E>>>,
    writer: Option<JoinHandle<()>>,
}

impl<J: Send + 'static, E: Clone + From<Stopped> + Send + 'static> GroupCommit<J, E> {
    /// Start a writer thread named `name` that takes up to `max_batch`
    /// queued jobs at a time (at least one) and applies them with `apply`.
    /// At most `capacity` jobs wait in the queue.
    pub fn spawn(
        name: &str,
        capacity: usize,
        max_batch: usize,
        apply: impl FnMut(&[J]) -> Result<(), E> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel(capacity.max(1));
        let writer = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || write(jobs, max_batch.max(1), apply))?;
        Ok(GroupCommit {
            queue: Some(queue),
            writer: Some(writer),
        })
    }

    /// Queue `job` (waiting for room if the queue is full) and wait until
    /// the batch holding it has been applied: its result.
    pub async fn submit(&self, job: J) -> Result<(), E> {
        let queue = self.queue.as_ref().ok_or(Stopped)?;
        let (done, result) = oneshot::channel();
        queue
            .send(Pending { job, done })
            .await
            .map_err(|_| Stopped)?;
        result.await.unwrap_or(Err(E::from(Stopped)))
    }

    /// Jobs queued and not yet taken by the writer.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queue
            .as_ref()
            .map_or(0, |q| q.max_capacity() - q.capacity())
    }
}

impl<J, E> Drop for GroupCommit<J, E> {
    fn drop(&mut self) {
        // Closing the queue ends the writer's loop once it is empty.
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            // A panic in `apply` already answered its callers (`Stopped`).
            let _ = writer.join();
        }
    }
}

/// The writer's loop: block for a first job, take whatever else is queued
/// (up to `max_batch`), apply, answer; until the queue is closed and empty.
fn write<J, E: Clone>(
    mut queue: mpsc::Receiver<Pending<J, E>>,
    max_batch: usize,
    mut apply: impl FnMut(&[J]) -> Result<(), E>,
) {
    let mut jobs = Vec::new();
    let mut callers = Vec::new();
    while let Some(first) = queue.blocking_recv() {
        let mut next = Some(first);
        while let Some(Pending { job, done }) = next {
            jobs.push(job);
            callers.push(done);
            next = if jobs.len() < max_batch {
                queue.try_recv().ok()
            } else {
                None
            };
        }
        let result = apply(&jobs);
        jobs.clear();
        for caller in callers.drain(..) {
            // A caller that gave up has dropped its receiver: nothing to tell.
            let _ = caller.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests;
