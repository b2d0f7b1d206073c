//! One supervisor for every background job (sweeps, the event worker, CRM
//! refreshes): each job is spawned under a name, its end is logged, a job
//! that panics is restarted after a pause (a bug in a sweep must not
//! silently stop sweeping), and there is one shutdown path
//! ([`Supervisor::shutdown`]): tell every job to stop, wait a bounded time,
//! abort the rest.
//!
//! Two kinds of job: [`Supervisor::spawn`] for loops with nothing to finish
//! (they are dropped at their next await when the shutdown begins), and
//! [`Supervisor::spawn_stoppable`] for jobs that finish the work in hand
//! once told to stop (they get the grace period, then are aborted).

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// Pause before a panicked job runs again. A job that panics at once on
/// every run then costs one log line and one task per 5 s instead of a busy
/// loop; a periodic sweep (every minute) still misses at most one round.
pub const RESTART_PAUSE: Duration = Duration::from_secs(5);

/// The signal to stop, as a job sees it. Cloning shares it.
#[derive(Clone, Debug)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Resolves once the shutdown has begun (at once if it has).
    pub async fn stopped(&mut self) {
        // An error means the supervisor is gone: that is a stop too.
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Whether the shutdown has begun.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

/// One supervised job: the task that runs (and restarts) it, and the run
/// in progress.
struct Job {
    name: String,
    supervisor: JoinHandle<()>,
    current: Arc<Mutex<Option<AbortHandle>>>,
}

impl Job {
    fn abort(&self) {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(run) = current.as_ref() {
            run.abort();
        }
        self.supervisor.abort();
    }
}

/// The background jobs of one server. Dropping it without
/// [`shutdown`](Supervisor::shutdown) aborts every job.
pub struct Supervisor {
    stop: watch::Sender<bool>,
    jobs: Mutex<Vec<Job>>,
    restart_pause: Duration,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    /// A supervisor with no jobs yet, restarting panicked jobs after
    /// [`RESTART_PAUSE`].
    pub fn new() -> Self {
        Self::with_restart_pause(RESTART_PAUSE)
    }

    /// A supervisor restarting panicked jobs after `pause`.
    pub fn with_restart_pause(pause: Duration) -> Self {
        Supervisor {
            stop: watch::channel(false).0,
            jobs: Mutex::new(Vec::new()),
            restart_pause: pause,
        }
    }

    /// Run `job()` in the background under `name`, again after a panic;
    /// when the shutdown begins it is dropped at its next await.
    pub fn spawn<F, Fut>(&self, name: impl Into<String>, job: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.spawn_stoppable(name, move |mut stop| {
            let run = job();
            async move {
                tokio::select! {
                    () = run => {}
                    () = stop.stopped() => {}
                }
            }
        });
    }

    /// Run `job(stop)` in the background under `name`, again after a
    /// panic; once `stop` fires it should return, and is aborted if it has
    /// not within the shutdown's grace.
    pub fn spawn_stoppable<F, Fut>(&self, name: impl Into<String>, job: F)
    where
        F: Fn(Stop) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name = name.into();
        let stop = Stop(self.stop.subscribe());
        let current = Arc::new(Mutex::new(None));
        let supervisor = tokio::spawn(supervise(
            name.clone(),
            job,
            stop,
            current.clone(),
            self.restart_pause,
        ));
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Job {
                name,
                supervisor,
                current,
            });
    }

    /// Tell every job to stop, wait up to `grace` for them to end, then
    /// abort the rest. Returns the names of the jobs aborted.
    pub async fn shutdown(self, grace: Duration) -> Vec<String> {
        self.stop.send_replace(true);
        let jobs = std::mem::take(&mut *self.jobs.lock().unwrap_or_else(PoisonError::into_inner));
        let deadline = tokio::time::Instant::now() + grace;
        let mut aborted = Vec::new();
        for mut job in jobs {
            if tokio::time::timeout_at(deadline, &mut job.supervisor)
                .await
                .is_err()
            {
                tracing::warn!(job = %job.name, grace_ms = grace.as_millis() as u64, "background job did not stop in time; aborted");
                job.abort();
                aborted.push(job.name);
            }
        }
        aborted
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        for job in self
            .jobs
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            job.abort();
        }
    }
}

/// Run `job` until it returns, restarting it after `pause` when it panics,
/// until `stop` fires.
async fn supervise<F, Fut>(
    name: String,
    job: F,
    mut stop: Stop,
    current: Arc<Mutex<Option<AbortHandle>>>,
    pause: Duration,
) where
    F: Fn(Stop) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Each run is a task of its own, so its panic is caught by tokio and
    // seen here as a `JoinError` instead of ending the supervision.
    while !stop.is_stopped() {
        let run = tokio::spawn(job(stop.clone()));
        *current.lock().unwrap_or_else(PoisonError::into_inner) = Some(run.abort_handle());
        match run.await {
            Ok(()) if stop.is_stopped() => {
                tracing::debug!(job = %name, "background job stopped");
                return;
            }
            Ok(()) => {
                tracing::info!(job = %name, "background job ended");
                return;
            }
            Err(e) if e.is_panic() => {
                tracing::error!(job = %name, error = %e, pause_ms = pause.as_millis() as u64, "background job panicked; restarting after a pause");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.stopped() => return,
                }
            }
            // Aborted by the shutdown.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const PAUSE: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_panicking_job_is_restarted_after_the_pause() {
        let runs = Arc::new(AtomicUsize::new(0));
        let jobs = Supervisor::with_restart_pause(PAUSE);
        let counted = runs.clone();
        jobs.spawn("flaky sweep", move || {
            let runs = counted.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("a bug in the sweep");
                }
                std::future::pending::<()>().await;
            }
        });
        tokio::time::sleep(PAUSE / 2).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "not restarted before the pause"
        );
        tokio::time::sleep(PAUSE * 2).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "restarted after each panic");
        tokio::time::sleep(PAUSE * 5).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "a healthy run is left alone"
        );
        assert!(jobs.shutdown(PAUSE).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_that_ends_is_not_restarted() {
        let runs = Arc::new(AtomicUsize::new(0));
        let jobs = Supervisor::with_restart_pause(PAUSE);
        let counted = runs.clone();
        jobs.spawn("one-off", move || {
            let runs = counted.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::time::sleep(PAUSE * 10).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(jobs.shutdown(PAUSE).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_drops_plain_jobs_at_their_next_await() {
        let jobs = Supervisor::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        jobs.spawn("loop", move || {
            // Holds the sender while it runs: the channel closes when the
            // job is dropped.
            let tx = tx.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    let _ = tx.try_send(());
                }
            }
        });
        tokio::task::yield_now().await;
        let started = tokio::time::Instant::now();
        assert!(jobs.shutdown(Duration::from_secs(30)).await.is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no wait for the grace"
        );
        assert_eq!(rx.recv().await, None, "the job is gone");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stoppable_job_finishes_its_work_after_the_signal() {
        let jobs = Supervisor::new();
        let finished = Arc::new(AtomicUsize::new(0));
        let done = finished.clone();
        jobs.spawn_stoppable("worker", move |mut stop| {
            let done = done.clone();
            async move {
                stop.stopped().await;
                // The work in hand, after the signal.
                tokio::time::sleep(Duration::from_secs(2)).await;
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::task::yield_now().await;
        assert!(jobs.shutdown(Duration::from_secs(10)).await.is_empty());
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_ignoring_the_signal_is_aborted_after_the_grace() {
        let jobs = Supervisor::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        jobs.spawn_stoppable("stubborn", move |_stop| {
            let tx = tx.clone();
            async move {
                let _held = tx;
                std::future::pending::<()>().await;
            }
        });
        jobs.spawn("polite", std::future::pending::<()>);
        tokio::task::yield_now().await;
        let started = tokio::time::Instant::now();
        let aborted = jobs.shutdown(Duration::from_secs(3)).await;
        assert_eq!(aborted, vec!["stubborn".to_owned()]);
        assert!(
            started.elapsed() >= Duration::from_secs(3),
            "the grace was given"
        );
        assert_eq!(
            rx.recv().await,
            None,
            "the run was aborted, not only its supervisor"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_supervisor_aborts_its_jobs() {
        let jobs = Supervisor::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        jobs.spawn_stoppable("left running", move |_stop| {
            let tx = tx.clone();
            async move {
                let _held = tx;
                std::future::pending::<()>().await;
            }
        });
        tokio::task::yield_now().await;
        drop(jobs);
        assert_eq!(rx.recv().await, None);
    }
}
