//! Runs concurrent requests for one model as batches.
//!
//! A [`Batcher`] owns a few worker threads ([`BatchConfig::workers`]) and a bounded queue. Callers block in
//! [`Batcher::call`] until their own answer comes back. The worker takes the oldest request,
//! adds whatever else is already queued (up to [`BatchConfig::max_batch`]), and, only when the
//! queue shows concurrent load, lingers up to [`BatchConfig::max_wait`] for more before it runs
//! the batch. A request that arrives while nothing else is queued or running is run by its
//! caller's own thread at once, as it would be without a batcher.
//!
//! [`BatchedClassifier`] is the categorizer's use of it: photos are decoded and preprocessed on
//! the caller's thread (so a bad photo fails only its own request, before it is queued), and
//! the worker stacks the tensors of a batch and runs one forward pass.
//!
//! Bounds: at most `max_queue` requests wait, at most `max_batch` run together in each of at
//! most `workers` batches, and a caller
//! whose request cannot be queued gets [`BatchError::Busy`] at once. This module owns no state
//! beyond its queue; it knows nothing about the group or the replicas.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::Tensor;

use crate::model::{Classifier, Guess, ModelError};

/// Largest batch size a configuration may ask for.
pub const MAX_BATCH: usize = 64;
/// Most worker threads a configuration may ask for, per model.
pub const MAX_WORKERS: usize = 8;
/// Largest queue a configuration may ask for (the queue's slots are allocated up front).
pub const MAX_QUEUE: usize = 4096;

/// Limits of a [`Batcher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most requests run together. Default 8; 1 turns batching off.
    pub max_batch: usize,
    /// Longest a batch waits for more requests after its first one, and only under concurrent
    /// load (a request alone never waits). Default 2 ms.
    pub max_wait: Duration,
    /// Most requests queued behind the running batches. Default 64.
    pub max_queue: usize,
    /// Batches that may run at once (worker threads). Default 2: while one batch runs, the
    /// next one gathers, and small models keep both cores of a small machine busy.
    pub workers: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 8,
            max_wait: Duration::from_millis(2),
            max_queue: 64,
            workers: 2,
        }
    }
}

impl BatchConfig {
    /// No batching: every request runs alone, in arrival order.
    pub fn unbatched() -> Self {
        Self {
            max_batch: 1,
            max_wait: Duration::ZERO,
            ..Self::default()
        }
    }

    /// Sets [`max_batch`](Self::max_batch) (clamped to 1..=[`MAX_BATCH`]).
    pub fn with_max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.clamp(1, MAX_BATCH);
        self
    }

    /// Sets [`max_wait`](Self::max_wait).
    pub fn with_max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Sets [`workers`](Self::workers) (clamped to 1..=[`MAX_WORKERS`]).
    pub fn with_workers(mut self, n: usize) -> Self {
        self.workers = n.clamp(1, MAX_WORKERS);
        self
    }

    /// Sets [`max_queue`](Self::max_queue) (clamped to 1..=[`MAX_QUEUE`]).
    pub fn with_max_queue(mut self, n: usize) -> Self {
        self.max_queue = n.clamp(1, MAX_QUEUE);
        self
    }
}

/// A batching key of the configuration that is not a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SOSPDEMO/{key} = {value:?} is not a whole number")]
pub struct BatchConfigError {
    /// The key, without its section.
    pub key: &'static str,
    /// Its text.
    pub value: String,
}

impl BatchConfig {
    /// The limits from the `[SOSPDEMO]` section of a node's configuration: `batch_max_size`,
    /// `batch_max_wait_us`, `batch_max_queue` and `batch_workers`; an unset key keeps its
    /// default.
    pub fn from_config(config: &derecho::config::Config) -> Result<Self, BatchConfigError> {
        let number = |key: &'static str| -> Result<Option<u64>, BatchConfigError> {
            match config.raw(&format!("SOSPDEMO/{key}")) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| BatchConfigError {
                    key,
                    value: v.to_owned(),
                }),
            }
        };
        let mut c = Self::default();
        if let Some(n) = number("batch_max_size")? {
            c = c.with_max_batch(usize::try_from(n).unwrap_or(usize::MAX));
        }
        if let Some(us) = number("batch_max_wait_us")? {
            c = c.with_max_wait(Duration::from_micros(us));
        }
        if let Some(n) = number("batch_max_queue")? {
            c = c.with_max_queue(usize::try_from(n).unwrap_or(usize::MAX));
        }
        if let Some(n) = number("batch_workers")? {
            c = c.with_workers(usize::try_from(n).unwrap_or(usize::MAX));
        }
        Ok(c)
    }
}

/// Why a request got no answer from its batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The queue is full; the request was not accepted.
    #[error("the model is overloaded: {queued} requests are already waiting; try again later")]
    Busy {
        /// The queue bound that was reached.
        queued: usize,
    },
    /// The worker stopped (it failed while running a batch) before answering.
    #[error("the batch worker stopped before answering")]
    Stopped,
}

/// One queued request and where its answer goes.
struct Job<I, O> {
    input: I,
    reply: SyncSender<O>,
}

/// A queue in front of a function that handles many inputs at once (see the module docs).
pub struct Batcher<I, O> {
    queue: SyncSender<Job<I, O>>,
    max_queue: usize,
    /// Requests accepted and not yet answered (queued, gathering or running).
    pending: Arc<AtomicUsize>,
    run: RunFn<I, O>,
}

/// The function a [`Batcher`] runs on each batch.
type RunFn<I, O> = Arc<dyn Fn(Vec<I>) -> Vec<O> + Send + Sync>;

impl<I, O> std::fmt::Debug for Batcher<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("max_queue", &self.max_queue)
            .finish_non_exhaustive()
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the worker thread. `run` gets the inputs of a batch, oldest first, and must give
    /// one output per input, in the same order; a missing output is answered
    /// [`BatchError::Stopped`]. The worker ends when the batcher is dropped and the queue is
    /// empty.
    pub fn start<F>(name: &str, config: BatchConfig, run: F) -> std::io::Result<Self>
    where
        F: Fn(Vec<I>) -> Vec<O> + Send + Sync + 'static,
    {
        let config = BatchConfig {
            max_batch: config.max_batch.clamp(1, MAX_BATCH),
            max_queue: config.max_queue.clamp(1, MAX_QUEUE),
            workers: config.workers.clamp(1, MAX_WORKERS),
            ..config
        };
        let (queue, jobs) = mpsc::sync_channel(config.max_queue);
        let jobs = Arc::new(Mutex::new(jobs));
        let run: RunFn<I, O> = Arc::new(run);
        let pending = Arc::new(AtomicUsize::new(0));
        for i in 0..config.workers {
            let (jobs, run, pending) = (Arc::clone(&jobs), Arc::clone(&run), Arc::clone(&pending));
            std::thread::Builder::new()
                .name(format!("batch-{name}-{i}"))
                .spawn(move || work(&jobs, config, run.as_ref(), &pending))?;
        }
        Ok(Self {
            queue,
            max_queue: config.max_queue,
            pending,
            run,
        })
    }

    /// Runs `input` and waits for its output: on this thread at once if nothing else is
    /// queued or running (no hand-over to a worker, so a lone request costs what it would
    /// without a batcher), otherwise in the next batch.
    pub fn call(&self, input: I) -> Result<O, BatchError> {
        if self
            .pending
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let output = (self.run)(vec![input]).pop();
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return output.ok_or(BatchError::Stopped);
        }
        self.enqueue(input)?.recv().map_err(|_| BatchError::Stopped)
    }

    /// Queues every input (they may share a batch with each other and with other callers'
    /// inputs) and waits for all their outputs, in order. An input that finds the queue full
    /// is answered [`BatchError::Busy`]; the others still run.
    pub fn call_many(&self, inputs: Vec<I>) -> Vec<Result<O, BatchError>> {
        let pending: Vec<_> = inputs.into_iter().map(|i| self.enqueue(i)).collect();
        pending
            .into_iter()
            .map(|p| p?.recv().map_err(|_| BatchError::Stopped))
            .collect()
    }

    fn enqueue(&self, input: I) -> Result<Receiver<O>, BatchError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.pending.fetch_add(1, Ordering::AcqRel);
        let refused = match self.queue.try_send(Job { input, reply }) {
            Ok(()) => return Ok(answer),
            Err(TrySendError::Full(_)) => BatchError::Busy {
                queued: self.max_queue,
            },
            Err(TrySendError::Disconnected(_)) => BatchError::Stopped,
        };
        self.pending.fetch_sub(1, Ordering::AcqRel);
        Err(refused)
    }
}

/// A worker's loop: gather a batch (holding the queue, so that workers take turns), run it,
/// answer each caller.
fn work<I, O, F>(
    jobs: &Mutex<Receiver<Job<I, O>>>,
    config: BatchConfig,
    run: &F,
    pending: &AtomicUsize,
) where
    F: Fn(Vec<I>) -> Vec<O> + ?Sized,
{
    // Whether this worker's previous batch had company: only then is lingering worth its
    // delay.
    let mut busy = false;
    loop {
        let gathered = {
            let jobs = jobs.lock().unwrap_or_else(|p| p.into_inner());
            gather(&jobs, config, busy)
        };
        let Some(batch) = gathered else {
            return;
        };
        busy = batch.len() > 1;
        let size = batch.len();
        let (inputs, replies): (Vec<I>, Vec<SyncSender<O>>) =
            batch.into_iter().map(|j| (j.input, j.reply)).unzip();
        tracing::trace!(size, "running a batch");
        let outputs = run(inputs);
        // A caller that gave up is no reason to stop; a missing output drops its sender, which
        // its caller sees as `Stopped`.
        for (reply, output) in replies.into_iter().zip(outputs) {
            let _ = reply.try_send(output);
        }
        pending.fetch_sub(size, Ordering::AcqRel);
    }
}

/// The next batch: the oldest request, whatever else is queued, and, under concurrent load
/// (`busy`, or company already waiting), what arrives within `max_wait`. `None` once the
/// batcher is gone.
fn gather<I, O>(
    jobs: &Receiver<Job<I, O>>,
    config: BatchConfig,
    busy: bool,
) -> Option<Vec<Job<I, O>>> {
    let first = jobs.recv().ok()?;
    let mut batch = vec![first];
    while batch.len() < config.max_batch {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    if (busy || batch.len() > 1) && !config.max_wait.is_zero() {
        let deadline = Instant::now() + config.max_wait;
        while batch.len() < config.max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match jobs.recv_timeout(left) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
    }
    Some(batch)
}

/// A [`Classifier`] behind a [`Batcher`]: concurrent photos share forward passes.
///
/// With batching off (`max_batch` 1) there is no worker: each photo runs on its caller's
/// thread, exactly as a plain [`Classifier::classify`].
pub struct BatchedClassifier {
    classifier: Arc<Classifier>,
    batcher: Option<Batcher<Tensor, Result<Guess, ModelError>>>,
}

impl std::fmt::Debug for BatchedClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchedClassifier").finish_non_exhaustive()
    }
}

/// Errors of [`BatchedClassifier::classify`].
#[derive(Debug, thiserror::Error)]
pub enum BatchClassifyError {
    /// The photo or the model is at fault.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The request got no answer from its batch.
    #[error(transparent)]
    Batch(#[from] BatchError),
}

impl BatchedClassifier {
    /// Starts the batch workers of `classifier` (none if `config.max_batch` is 1).
    pub fn new(
        name: &str,
        classifier: Arc<Classifier>,
        config: BatchConfig,
    ) -> std::io::Result<Self> {
        let engine = Arc::clone(&classifier);
        let batcher = if config.max_batch > 1 {
            Some(Batcher::start(name, config, move |inputs: Vec<Tensor>| {
                run_batch(&engine, inputs)
            })?)
        } else {
            None
        };
        Ok(Self {
            classifier,
            batcher,
        })
    }

    /// Classifies a JPEG or PNG photo, in a batch with whatever other photos are waiting.
    pub fn classify(&self, photo: &[u8]) -> Result<Guess, BatchClassifyError> {
        let Some(batcher) = &self.batcher else {
            return Ok(self.classifier.classify(photo)?);
        };
        let x = self.classifier.preprocess().photo_to_tensor(photo)?;
        Ok(batcher.call(x)??)
    }

    /// Classifies several photos, sharing batches with each other and with other callers;
    /// one answer per photo, in order. A photo that cannot be decoded fails alone.
    pub fn classify_many(&self, photos: &[Vec<u8>]) -> Vec<Result<Guess, BatchClassifyError>> {
        let Some(batcher) = &self.batcher else {
            return photos.iter().map(|p| self.classify(p)).collect();
        };
        let prepared: Vec<Result<Tensor, ModelError>> = photos
            .iter()
            .map(|p| self.classifier.preprocess().photo_to_tensor(p))
            .collect();
        let good: Vec<Tensor> = prepared
            .iter()
            .filter_map(|x| x.as_ref().ok().cloned())
            .collect();
        let mut answers = batcher.call_many(good).into_iter();
        prepared
            .into_iter()
            .map(|x| match x {
                Err(e) => Err(e.into()),
                Ok(_) => match answers.next() {
                    Some(Ok(guess)) => Ok(guess?),
                    Some(Err(e)) => Err(e.into()),
                    None => Err(BatchError::Stopped.into()),
                },
            })
            .collect()
    }

    /// The model.
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }
}

/// One forward pass over the stacked inputs; if it fails as a whole, each input is retried
/// alone so that only the input at fault gets an error.
fn run_batch(classifier: &Classifier, inputs: Vec<Tensor>) -> Vec<Result<Guess, ModelError>> {
    let one = |x: &Tensor| -> Result<Guess, ModelError> {
        let mut g = classifier.classify_batch(&x.unsqueeze(0)?)?;
        g.pop()
            .ok_or_else(|| ModelError::Tensor(candle_core::Error::Msg("empty batch".into())))
    };
    if inputs.len() == 1 {
        return inputs.iter().map(one).collect();
    }
    let together = Tensor::stack(&inputs, 0)
        .map_err(ModelError::from)
        .and_then(|x| classifier.classify_batch(&x));
    match together {
        Ok(guesses) if guesses.len() == inputs.len() => guesses.into_iter().map(Ok).collect(),
        Ok(_) | Err(_) => inputs.iter().map(one).collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn a_lone_request_runs_alone_and_answers_in_order() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let b = Batcher::start("t", BatchConfig::default(), move |xs: Vec<u32>| {
            seen.lock().unwrap().push(xs.len());
            xs.into_iter().map(|x| x * 2).collect()
        })
        .unwrap();
        for i in 0..5 {
            assert_eq!(b.call(i).unwrap(), i * 2);
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1; 5]);
    }

    /// The sizes of the batches a test batcher ran, in order.
    type Sizes = Arc<std::sync::Mutex<Vec<usize>>>;

    /// A batcher whose first batch waits at `gate` (so that requests queue behind it) and
    /// which records the size of every batch.
    fn held_batcher(config: BatchConfig, gate: Arc<Barrier>) -> (Arc<Batcher<u32, u32>>, Sizes) {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let first = std::sync::atomic::AtomicBool::new(true);
        let b = Batcher::start("t", config, move |xs: Vec<u32>| {
            if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                gate.wait();
            }
            seen.lock().unwrap().push(xs.len());
            xs.into_iter().map(|x| x + 100).collect()
        })
        .unwrap();
        (Arc::new(b), sizes)
    }

    #[test]
    fn concurrent_requests_share_batches_within_the_bound() {
        let gate = Arc::new(Barrier::new(2));
        let config = BatchConfig::default().with_max_batch(4).with_workers(1);
        let (b, sizes) = held_batcher(config, Arc::clone(&gate));
        let ready = Arc::new(Barrier::new(10));
        let callers: Vec<_> = (0..9)
            .map(|i| {
                let (b, ready) = (Arc::clone(&b), Arc::clone(&ready));
                std::thread::spawn(move || {
                    ready.wait();
                    (i, b.call(i).unwrap())
                })
            })
            .collect();
        // Queued rather than called, so that the worker (not this thread) holds it.
        let head = b.enqueue(1000).unwrap();
        ready.wait();
        // Give the callers a moment to queue behind the held batch, then release it.
        std::thread::sleep(Duration::from_millis(100));
        gate.wait();
        assert_eq!(head.recv().unwrap(), 1100);
        for c in callers {
            let (i, out) = c.join().unwrap();
            assert_eq!(out, i + 100, "each caller gets its own answer");
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 10, "{sizes:?}");
        assert!(sizes.iter().all(|&n| (1..=4).contains(&n)), "{sizes:?}");
        assert!(
            sizes.len() < 10,
            "no two requests shared a batch: {sizes:?}"
        );
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let gate = Arc::new(Barrier::new(2));
        let config = BatchConfig::default()
            .with_max_queue(1)
            .with_max_batch(1)
            .with_workers(1);
        let (b, _) = held_batcher(config, Arc::clone(&gate));
        // Request 1 is taken by the worker and held at the gate; request 2 then fills the one
        // slot of the queue (it fits once the worker has taken request 1).
        let held = b.enqueue(1).unwrap();
        let queued = loop {
            match b.enqueue(2) {
                Ok(answer) => break answer,
                Err(BatchError::Busy { .. }) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(b.call(3), Err(BatchError::Busy { queued: 1 }));
        gate.wait();
        assert_eq!(held.recv().unwrap(), 101);
        assert_eq!(queued.recv().unwrap(), 102);
    }

    #[test]
    fn a_missing_output_is_an_error_not_a_hang() {
        let b =
            Batcher::start("t", BatchConfig::default(), |_: Vec<u32>| Vec::<u32>::new()).unwrap();
        assert_eq!(b.call(1), Err(BatchError::Stopped));
    }
}
