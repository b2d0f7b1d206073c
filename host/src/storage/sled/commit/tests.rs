//! The group commit on its own, with an `apply` the tests control: a gate
//! holds the writer inside a batch while callers queue behind it, so the
//! batches are known exactly.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{GroupCommit, Stopped};

/// The longest a writer waits at a closed gate.
const GATE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
enum TestError {
    Boom,
    Stopped,
}

impl From<Stopped> for TestError {
    fn from(_: Stopped) -> Self {
        TestError::Stopped
    }
}

/// What the writer did, shared with the test.
#[derive(Default)]
struct Seen {
    /// Batches whose `apply` has returned, in order.
    applied: Vec<Vec<u32>>,
    /// `apply` calls begun.
    started: usize,
    /// Whether the gate is open.
    open: bool,
}

#[derive(Default)]
struct Writer {
    seen: Mutex<Seen>,
    changed: Condvar,
}

impl Writer {
    fn open(&self) {
        self.seen.lock().unwrap().open = true;
        self.changed.notify_all();
    }

    fn started(&self) -> usize {
        self.seen.lock().unwrap().started
    }

    fn applied(&self) -> Vec<Vec<u32>> {
        self.seen.lock().unwrap().applied.clone()
    }

    fn was_applied(&self, job: u32) -> bool {
        self.applied().iter().flatten().any(|&j| j == job)
    }

    /// The `apply` under test: wait for the gate, take a moment (as a flush
    /// does), then record the batch; fail when `fails` says so.
    fn apply(&self, jobs: &[u32], fails: fn(&[u32]) -> bool) -> Result<(), TestError> {
        let mut seen = self.seen.lock().unwrap();
        seen.started += 1;
        // Bounded, so a test that fails with the gate closed ends (the drop
        // of its `GroupCommit` waits for this writer) instead of hanging.
        let (seen, _) = self
            .changed
            .wait_timeout_while(seen, GATE_TIMEOUT, |seen| !seen.open)
            .unwrap();
        drop(seen);
        std::thread::sleep(Duration::from_millis(5));
        self.seen.lock().unwrap().applied.push(jobs.to_vec());
        if fails(jobs) {
            Err(TestError::Boom)
        } else {
            Ok(())
        }
    }
}

type Commit = GroupCommit<u32, TestError>;

/// A closed-gate writer with this queue `capacity`; its `apply` fails when
/// `fails` says so.
fn start(capacity: usize, fails: fn(&[u32]) -> bool) -> (Arc<Commit>, Arc<Writer>) {
    let writer = Arc::new(Writer::default());
    let w = writer.clone();
    let commit = Commit::spawn("test-commit", capacity, 1000, move |jobs| {
        w.apply(jobs, fails)
    })
    .unwrap();
    (Arc::new(commit), writer)
}

fn never(_: &[u32]) -> bool {
    false
}

/// Submit `job` from a task of its own; its result once applied.
fn submit(commit: &Arc<Commit>, job: u32) -> tokio::task::JoinHandle<Result<(), TestError>> {
    let commit = commit.clone();
    tokio::spawn(async move { commit.submit(job).await })
}

/// Job 0 in the writer's hands (held at the gate), then jobs `1..=n`
/// queued behind it.
async fn hold_then_queue(
    commit: &Arc<Commit>,
    writer: &Writer,
    n: u32,
) -> (
    tokio::task::JoinHandle<Result<(), TestError>>,
    Vec<tokio::task::JoinHandle<Result<(), TestError>>>,
) {
    let first = submit(commit, 0);
    eventually(|| writer.started() == 1).await;
    let rest = (1..=n).map(|job| submit(commit, job)).collect();
    let queued = usize::try_from(n)
        .unwrap()
        .min(commit.queue.as_ref().unwrap().max_capacity());
    eventually(|| commit.queued() == queued).await;
    (first, rest)
}

async fn eventually(done: impl Fn() -> bool) {
    for _ in 0..5000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition not reached in 5 s");
}

#[tokio::test]
async fn concurrent_callers_share_one_apply_and_return_only_after_it() {
    const N: u32 = 16;
    let (commit, writer) = start(64, never);
    let (first, rest) = hold_then_queue(&commit, &writer, N).await;
    writer.open();
    first.await.unwrap().unwrap();
    let mut waiting = Vec::new();
    for (job, task) in (1..=N).zip(rest) {
        let writer = writer.clone();
        // Each caller checks, as soon as it is answered, that its batch had
        // been applied (the sleep in `apply` makes an early answer visible).
        waiting.push(tokio::spawn(async move {
            task.await.unwrap().unwrap();
            assert!(
                writer.was_applied(job),
                "job {job} answered before its apply"
            );
        }));
    }
    for w in waiting {
        w.await.unwrap();
    }
    let applied = writer.applied();
    assert_eq!(applied.len(), 2, "{applied:?}");
    assert_eq!(applied[0], [0]);
    let mut second = applied[1].clone();
    second.sort_unstable();
    assert_eq!(second, (1..=N).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_failed_apply_answers_every_caller_of_its_batch_with_the_error() {
    const N: u32 = 8;
    // Only the batch holding job 1 fails.
    let (commit, writer) = start(64, |jobs| jobs.contains(&1));
    let (first, rest) = hold_then_queue(&commit, &writer, N).await;
    writer.open();
    assert_eq!(first.await.unwrap(), Ok(()));
    for task in rest {
        assert_eq!(task.await.unwrap(), Err(TestError::Boom));
    }
    assert_eq!(writer.applied().len(), 2);
    // The writer goes on after a failed batch.
    assert_eq!(commit.submit(100).await, Ok(()));
}

#[tokio::test]
async fn a_full_queue_makes_callers_wait_and_loses_nothing() {
    const CAPACITY: usize = 2;
    const N: u32 = 10;
    let (commit, writer) = start(CAPACITY, never);
    let (first, rest) = hold_then_queue(&commit, &writer, N).await;
    // The queue holds its capacity; the other callers wait for room.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(commit.queued(), CAPACITY);
    assert!(rest.iter().all(|t| !t.is_finished()));
    writer.open();
    first.await.unwrap().unwrap();
    for task in rest {
        task.await.unwrap().unwrap();
    }
    let mut all: Vec<u32> = writer.applied().concat();
    all.sort_unstable();
    assert_eq!(all, (0..=N).collect::<Vec<_>>(), "each job applied once");
}

#[tokio::test]
async fn dropping_applies_what_is_queued_then_stops_the_writer() {
    const N: u32 = 5;
    let (commit, writer) = start(64, never);
    let (first, rest) = hold_then_queue(&commit, &writer, N).await;
    // Every caller gives up: its job stays queued, and ours is now the
    // last handle.
    for task in std::iter::once(first).chain(rest) {
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    }
    let commit = Arc::into_inner(commit).expect("the callers let go");
    let gate = {
        let writer = writer.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            writer.open();
        })
    };
    // The drop waits for the writer: it applies what was queued, then ends
    // (and with it `apply`, the only other holder of `writer`).
    drop(commit);
    let mut all: Vec<u32> = writer.applied().concat();
    all.sort_unstable();
    assert_eq!(all, (0..=N).collect::<Vec<_>>());
    gate.join().unwrap();
    assert_eq!(Arc::strong_count(&writer), 1, "the writer thread has ended");
}

#[tokio::test]
async fn a_writer_that_panicked_answers_stopped() {
    let commit = Commit::spawn("test-commit", 4, 4, |_| panic!("apply panics")).unwrap();
    assert_eq!(commit.submit(1).await, Err(TestError::Stopped));
    assert_eq!(commit.submit(2).await, Err(TestError::Stopped));
}
