//! The two replicated types of the service and the routing between them.
//!
//! * [`FunctionTier`]: the front end. It holds no replicated state; each member serves gRPC
//!   (see [`crate::service`]) and forwards requests to the categorizer tier.
//! * [`CategorizerTier`]: the models, tag → the three model files, are its replicated state.
//!   Installing and removing a model are **ordered** updates inside the tag's shard, so every
//!   replica holds the same models and a node that joins the shard receives them by state
//!   transfer. Inference is a point-to-point query: the replica builds (and caches) a candle
//!   model from the files the first time a tag is used, and classifies outside the replica's
//!   lock, so a long inference never holds up an install. Each loaded model has a
//!   [`BatchedClassifier`]: photos that reach the replica at the same time (from several front
//!   ends, or several photos of one [`CategorizerQuery::ClassifyBatch`]) share forward passes.
//!
//! [`GroupCategorizers`] is the function tier's side: tag `t` goes to shard `t % shards`; the
//! member is chosen round-robin among the shard's members, and a member that fails or leaves is
//! skipped for the next one.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use derecho::config::Config;
use derecho::layout::{LayoutError, LayoutPolicy, SubgroupPolicy, TypePolicy};
use derecho::rpc::{CallError, QueryTask, Replicated, ReplyError, SendError, Subgroup};
use serde::{Deserialize, Serialize};

use crate::batch::{BatchConfig, BatchedClassifier, Batcher, MAX_BATCH};
use crate::model::{Classifier, ModelFiles};
use crate::service::{CategorizerError, Categorizers, Guess};

/// Name of the front-end type (and of its configuration profile, upper-cased).
pub const FUNCTION_TIER: &str = "FunctionTier";
/// Name of the categorizer type.
pub const CATEGORIZER_TIER: &str = "CategorizerTier";

/// The layout of the original demo: one subgroup per type, shards from the `FUNCTION_TIER`
/// and `CATEGORIZER_TIER` profiles (`num_shards`, `min_nodes`, `max_nodes`).
pub fn layout(config: &Config) -> Result<LayoutPolicy, LayoutError> {
    Ok(LayoutPolicy {
        types: vec![
            TypePolicy::new(
                FUNCTION_TIER,
                vec![SubgroupPolicy::flexible_even_shards_from_profile(
                    config,
                    "FUNCTION_TIER",
                )?],
            ),
            TypePolicy::new(
                CATEGORIZER_TIER,
                vec![SubgroupPolicy::flexible_even_shards_from_profile(
                    config,
                    "CATEGORIZER_TIER",
                )?],
            ),
        ],
    })
}

/// The front end: no replicated state.
#[derive(Debug, Default)]
pub struct FunctionTier;

impl Replicated for FunctionTier {
    type Update = ();
    type Query = ();
    type Reply = ();

    fn apply(&mut self, (): ()) {}

    fn query(&self, (): ()) {}

    fn save(&self, _: &mut dyn Write) -> io::Result<()> {
        Ok(())
    }

    fn load(&mut self, _: &mut dyn Read) -> io::Result<()> {
        Ok(())
    }
}

/// Ordered updates of the categorizer tier.
#[derive(Debug, Serialize, Deserialize)]
pub enum CategorizerUpdate {
    /// Install a model under a tag (refused if the tag is taken).
    Install {
        /// The tag.
        tag: u32,
        /// Synset, architecture, weights.
        model: StoredModel,
    },
    /// Remove the model of a tag.
    Remove {
        /// The tag.
        tag: u32,
    },
}

/// A model as the replicas store and ship it: the three files as uploaded, whatever their
/// format (ours or MXNet's; the engine recognises it from the contents when it loads them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredModel {
    /// `synset.txt`.
    #[serde(with = "serde_bytes")]
    pub synset: Vec<u8>,
    /// `arch.json`, or an MXNet `*-symbol.json`.
    #[serde(with = "serde_bytes")]
    pub architecture: Vec<u8>,
    /// `weights.safetensors`, or an MXNet `*.params`.
    #[serde(with = "serde_bytes")]
    pub weights: Vec<u8>,
}

impl From<ModelFiles> for StoredModel {
    fn from(m: ModelFiles) -> Self {
        Self {
            synset: m.synset,
            architecture: m.architecture,
            weights: m.weights,
        }
    }
}

impl StoredModel {
    fn files(&self) -> ModelFiles {
        ModelFiles {
            synset: self.synset.clone(),
            architecture: self.architecture.clone(),
            weights: self.weights.clone(),
        }
    }
}

/// Point-to-point queries of the categorizer tier.
#[derive(Debug, Serialize, Deserialize)]
pub enum CategorizerQuery {
    /// Classify a photo with the model of a tag.
    Classify {
        /// The tag.
        tag: u32,
        /// JPEG or PNG bytes.
        #[serde(with = "serde_bytes")]
        photo: Vec<u8>,
    },
    /// Classify several photos with the model of a tag; the reply is
    /// [`CategorizerReply::Guesses`], one answer per photo.
    ClassifyBatch {
        /// The tag.
        tag: u32,
        /// JPEG or PNG files.
        photos: Vec<serde_bytes::ByteBuf>,
    },
    /// The installed tags.
    Tags,
}

/// Replies of the categorizer tier.
#[derive(Debug, Serialize, Deserialize)]
pub enum CategorizerReply {
    /// The update was applied.
    Done,
    /// The classification.
    Guess {
        /// Label.
        label: String,
        /// Class index.
        class: u64,
        /// Probability.
        score: f32,
    },
    /// The installed tags.
    Tags(Vec<u32>),
    /// One answer ([`Guess`](Self::Guess) or [`Error`](Self::Error)) per photo of a
    /// [`CategorizerQuery::ClassifyBatch`], in order.
    Guesses(Vec<CategorizerReply>),
    /// What went wrong.
    Error(CategorizerError),
}

/// The categorizer's replica: the models (replicated) and the loaded engines with their batch
/// workers (a local cache).
#[derive(Default)]
pub struct CategorizerTier {
    models: BTreeMap<u32, Arc<StoredModel>>,
    engines: Mutex<HashMap<u32, Arc<BatchedClassifier>>>,
    batching: BatchConfig,
}

impl std::fmt::Debug for CategorizerTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CategorizerTier")
            .field("tags", &self.models.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl CategorizerTier {
    /// An empty replica whose models batch concurrent photos within `batching`.
    pub fn new(batching: BatchConfig) -> Self {
        Self {
            batching,
            ..Self::default()
        }
    }

    /// The installed tags.
    pub fn tags(&self) -> Vec<u32> {
        self.models.keys().copied().collect()
    }

    fn engine(&self, tag: u32) -> Result<Arc<BatchedClassifier>, CategorizerError> {
        let mut engines = self.engines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = engines.get(&tag) {
            return Ok(Arc::clone(e));
        }
        let model = self
            .models
            .get(&tag)
            .ok_or(CategorizerError::NoModel { tag })?;
        let classifier = Arc::new(Classifier::from_files(&model.files())?);
        let engine = BatchedClassifier::new(&format!("tag{tag}"), classifier, self.batching)
            .map_err(|e| {
                CategorizerError::Unavailable(format!("cannot start the batch worker: {e}"))
            })?;
        let engine = Arc::new(engine);
        engines.insert(tag, Arc::clone(&engine));
        Ok(engine)
    }
}

impl From<crate::batch::BatchClassifyError> for CategorizerError {
    fn from(e: crate::batch::BatchClassifyError) -> Self {
        match e {
            crate::batch::BatchClassifyError::Model(e) => e.into(),
            crate::batch::BatchClassifyError::Batch(e) => Self::Unavailable(e.to_string()),
        }
    }
}

fn guess_reply(r: Result<Guess, CategorizerError>) -> CategorizerReply {
    match r {
        Ok(g) => CategorizerReply::Guess {
            label: g.label,
            class: g.class as u64,
            score: g.score,
        },
        Err(e) => CategorizerReply::Error(e),
    }
}

impl Replicated for CategorizerTier {
    type Update = CategorizerUpdate;
    type Query = CategorizerQuery;
    type Reply = CategorizerReply;

    fn apply(&mut self, update: CategorizerUpdate) -> CategorizerReply {
        match update {
            CategorizerUpdate::Install { tag, model } => {
                if self.models.contains_key(&tag) {
                    return CategorizerReply::Error(CategorizerError::TagInUse { tag });
                }
                self.models.insert(tag, Arc::new(model));
                CategorizerReply::Done
            }
            CategorizerUpdate::Remove { tag } => {
                self.engines
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&tag);
                match self.models.remove(&tag) {
                    Some(_) => CategorizerReply::Done,
                    None => CategorizerReply::Error(CategorizerError::NoModel { tag }),
                }
            }
        }
    }

    fn query(&self, query: CategorizerQuery) -> CategorizerReply {
        self.query_task(query)()
    }

    fn query_task(&self, query: CategorizerQuery) -> QueryTask<CategorizerReply> {
        match query {
            CategorizerQuery::Tags => {
                let tags = self.tags();
                Box::new(move || CategorizerReply::Tags(tags))
            }
            CategorizerQuery::Classify { tag, photo } => match self.engine(tag) {
                // The inference itself runs after the replica is released.
                Ok(engine) => Box::new(move || {
                    guess_reply(engine.classify(&photo).map_err(CategorizerError::from))
                }),
                Err(e) => Box::new(move || CategorizerReply::Error(e)),
            },
            // Each photo becomes a tensor before it is queued: bound the count, not just the
            // bytes, so that many tiny images cannot blow up memory.
            CategorizerQuery::ClassifyBatch { photos, .. } if photos.len() > MAX_BATCH => {
                let n = photos.len();
                Box::new(move || {
                    CategorizerReply::Error(CategorizerError::Model(format!(
                        "a batch of {n} photos; at most {MAX_BATCH} are classified together"
                    )))
                })
            }
            CategorizerQuery::ClassifyBatch { tag, photos } => match self.engine(tag) {
                Ok(engine) => Box::new(move || {
                    let photos: Vec<Vec<u8>> = photos.into_iter().map(|p| p.into_vec()).collect();
                    CategorizerReply::Guesses(
                        engine
                            .classify_many(&photos)
                            .into_iter()
                            .map(|r| guess_reply(r.map_err(CategorizerError::from)))
                            .collect(),
                    )
                }),
                Err(e) => Box::new(move || CategorizerReply::Error(e)),
            },
        }
    }

    fn save(&self, out: &mut dyn Write) -> io::Result<()> {
        // Model by model, so a large state streams instead of being built in memory.
        out.write_all(&(self.models.len() as u64).to_le_bytes())?;
        for (tag, m) in &self.models {
            out.write_all(&tag.to_le_bytes())?;
            for part in [&m.synset, &m.architecture, &m.weights] {
                out.write_all(&(part.len() as u64).to_le_bytes())?;
                out.write_all(part)?;
            }
        }
        Ok(())
    }

    fn load(&mut self, input: &mut dyn Read) -> io::Result<()> {
        const MAX_PART: u64 = 1 << 30;
        let mut word = [0u8; 8];
        input.read_exact(&mut word)?;
        let count = u64::from_le_bytes(word);
        let mut models = BTreeMap::new();
        for _ in 0..count {
            let mut t = [0u8; 4];
            input.read_exact(&mut t)?;
            let mut parts: Vec<Vec<u8>> = Vec::with_capacity(3);
            for _ in 0..3 {
                input.read_exact(&mut word)?;
                let len = u64::from_le_bytes(word);
                if len > MAX_PART {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a model file of {len} bytes in the transferred state"),
                    ));
                }
                // Grown as the bytes arrive, not allocated from the length field: a state
                // that claims a huge part but ends early costs only what it sent.
                let mut v = Vec::new();
                (&mut *input).take(len).read_to_end(&mut v)?;
                if v.len() as u64 != len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the transferred state ends after {} of a model file's {len} bytes",
                            v.len()
                        ),
                    ));
                }
                parts.push(v);
            }
            let weights = parts.pop().unwrap_or_default();
            let architecture = parts.pop().unwrap_or_default();
            let synset = parts.pop().unwrap_or_default();
            models.insert(
                u32::from_le_bytes(t),
                Arc::new(StoredModel {
                    synset,
                    architecture,
                    weights,
                }),
            );
        }
        self.models = models;
        self.engines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }
}

/// Batch workers of the function tier: tag `t` is gathered by lane `t % FRONT_LANES`, so a
/// slow model holds up at most the tags that share its lane, and the thread count is fixed
/// whatever tags clients ask for.
const FRONT_LANES: usize = 4;

/// One answer per photo, in order.
type Answers = Vec<Result<Guess, CategorizerError>>;

/// A lane's job: a photo for a tag.
type FrontBatcher = Batcher<(u32, Vec<u8>), Result<Guess, CategorizerError>>;

/// The function tier's view of the categorizer tier, through the group.
///
/// Concurrent classifications of one tag are gathered (by a [`Batcher`] per lane, within the
/// node's [`BatchConfig`]) and travel as one [`CategorizerQuery::ClassifyBatch`], split so that
/// no request exceeds the group's P2P request size; a photo alone goes as a plain
/// [`CategorizerQuery::Classify`] at once.
pub struct GroupCategorizers {
    router: Arc<Router>,
    lanes: Vec<FrontBatcher>,
}

impl std::fmt::Debug for GroupCategorizers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCategorizers").finish_non_exhaustive()
    }
}

/// Picks the member of a tag's shard and retries on another one.
struct Router {
    tier: Subgroup<CategorizerTier>,
    next: AtomicUsize,
}

impl GroupCategorizers {
    /// Routes through `tier`, gathering concurrent photos of a tag within `batching`; a
    /// request carries at most `max_request_bytes` of photos (a larger photo travels alone).
    pub fn new(
        tier: Subgroup<CategorizerTier>,
        batching: BatchConfig,
        max_request_bytes: u64,
    ) -> std::io::Result<Self> {
        let router = Arc::new(Router {
            tier,
            next: AtomicUsize::new(0),
        });
        let limit = usize::try_from(max_request_bytes).unwrap_or(usize::MAX);
        // Batching off: no lanes, each photo is sent from its caller's thread.
        let lanes = (0..FRONT_LANES)
            .filter(|_| batching.max_batch > 1)
            .map(|i| {
                let r = Arc::clone(&router);
                Batcher::start(&format!("front{i}"), batching, move |jobs| {
                    r.classify_gathered(jobs, limit)
                })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self { router, lanes })
    }
}

impl Router {
    /// Answers gathered photos, in order: grouped by tag, each group split into requests of
    /// at most `limit` bytes of photos, the requests sent concurrently.
    fn classify_gathered(&self, jobs: Vec<(u32, Vec<u8>)>, limit: usize) -> Answers {
        // Requests: (tag, indices of the jobs it carries).
        let mut requests: Vec<(u32, Vec<usize>, usize)> = Vec::new();
        for (i, (tag, photo)) in jobs.iter().enumerate() {
            let fits = |(t, _, bytes): &&mut (u32, Vec<usize>, usize)| {
                *t == *tag && bytes.saturating_add(photo.len()) <= limit
            };
            match requests.iter_mut().find(fits) {
                Some((_, members, bytes)) => {
                    members.push(i);
                    *bytes += photo.len();
                }
                None => requests.push((*tag, vec![i], photo.len())),
            }
        }
        let mut photos: Vec<Option<Vec<u8>>> = jobs.into_iter().map(|(_, p)| Some(p)).collect();
        let mut work = Vec::with_capacity(requests.len());
        for (tag, members, _) in requests {
            let carried: Vec<Vec<u8>> = members
                .iter()
                .map(|&i| photos.get_mut(i).and_then(Option::take).unwrap_or_default())
                .collect();
            work.push((tag, members, carried));
        }
        let mut out: Vec<Option<Result<Guess, CategorizerError>>> =
            (0..photos.len()).map(|_| None).collect();
        let answers: Vec<(Vec<usize>, Answers)> = if work.len() == 1 {
            work.into_iter()
                .map(|(tag, members, carried)| (members, self.classify_many(tag, carried)))
                .collect()
        } else {
            std::thread::scope(|scope| {
                let running: Vec<_> = work
                    .into_iter()
                    .map(|(tag, members, carried)| {
                        let h = std::thread::Builder::new()
                            .spawn_scoped(scope, move || self.classify_many(tag, carried));
                        (members, h)
                    })
                    .collect();
                running
                    .into_iter()
                    .map(|(members, h)| {
                        let why = match h {
                            Ok(h) => match h.join() {
                                Ok(answers) => return (members, answers),
                                Err(_) => "the request to the categorizer failed".to_owned(),
                            },
                            Err(e) => format!("cannot start a thread for the request: {e}"),
                        };
                        let answers = members
                            .iter()
                            .map(|_| Err(CategorizerError::Unavailable(why.clone())))
                            .collect();
                        (members, answers)
                    })
                    .collect()
            })
        };
        for (members, answers) in answers {
            for (i, a) in members.into_iter().zip(answers) {
                if let Some(slot) = out.get_mut(i) {
                    *slot = Some(a);
                }
            }
        }
        out.into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    Err(CategorizerError::Unavailable(
                        "the categorizer gave no answer for this photo".into(),
                    ))
                })
            })
            .collect()
    }

    /// Classifies photos of one tag with one request: a plain `Classify` for one photo, a
    /// `ClassifyBatch` for several.
    fn classify_many(&self, tag: u32, mut photos: Vec<Vec<u8>>) -> Answers {
        let n = photos.len();
        if n == 1 {
            let photo = photos.pop().unwrap_or_default();
            return vec![self.classify(tag, photo)];
        }
        let query = CategorizerQuery::ClassifyBatch {
            tag,
            photos: photos.into_iter().map(serde_bytes::ByteBuf::from).collect(),
        };
        let reply = self.on_shard(tag, |m| self.tier.p2p_send(m, &query));
        let every = |e: CategorizerError| (0..n).map(|_| Err(e.clone())).collect();
        match reply {
            Ok(CategorizerReply::Guesses(answers)) if answers.len() == n => {
                answers.into_iter().map(guess_of).collect()
            }
            Ok(CategorizerReply::Error(e)) | Err(e) => every(e),
            Ok(other) => every(CategorizerError::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    fn classify(&self, tag: u32, photo: Vec<u8>) -> Result<Guess, CategorizerError> {
        let query = CategorizerQuery::Classify { tag, photo };
        guess_of(self.on_shard(tag, |m| self.tier.p2p_send(m, &query))?)
    }

    /// The members of the shard serving `tag`, rotated so that successive calls start at
    /// different members.
    fn candidates(&self, tag: u32) -> Result<Vec<u32>, CategorizerError> {
        let shards = self.tier.shard_members();
        if shards.is_empty() {
            return Err(CategorizerError::Unavailable(
                "the categorizer tier has no shard in the current view".into(),
            ));
        }
        let mut members = shards[tag as usize % shards.len()].clone();
        if members.is_empty() {
            return Err(CategorizerError::Unavailable(format!(
                "shard {} of the categorizer tier is empty",
                tag as usize % shards.len()
            )));
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed) % members.len();
        members.rotate_left(k);
        Ok(members)
    }

    /// Runs `call` on the shard's members in turn until one answers.
    fn on_shard<R>(
        &self,
        tag: u32,
        mut call: impl FnMut(u32) -> Result<R, CallError>,
    ) -> Result<R, CategorizerError> {
        let mut last = String::from("no member tried");
        // Twice round the shard: a view change may replace the member list meanwhile.
        for round in 0..2 {
            let members = if round == 0 {
                self.candidates(tag)?
            } else {
                std::thread::sleep(std::time::Duration::from_millis(200));
                self.candidates(tag)?
            };
            for m in members {
                match call(m) {
                    Ok(r) => return Ok(r),
                    Err(e) if e.is_transient() => {
                        tracing::warn!(member = m, error = %e, "categorizer unavailable; trying another");
                        last = e.to_string();
                    }
                    Err(e @ (CallError::TooLarge(_) | CallError::Send(SendError::TooLarge(_)))) => {
                        return Err(CategorizerError::Model(format!(
                            "the request is too large for this group: {e}; raise that limit in \
                             every node's derecho.cfg and restart the group"
                        )))
                    }
                    Err(e) => return Err(CategorizerError::Unavailable(e.to_string())),
                }
            }
        }
        Err(CategorizerError::Unavailable(last))
    }

    fn update(&self, tag: u32, update: &CategorizerUpdate) -> Result<(), CategorizerError> {
        let replies = self.on_shard(tag, |m| self.tier.ordered_send_via(m, update))?;
        let mut first_error = None;
        let mut done = 0;
        for (node, r) in replies {
            match r {
                Ok(CategorizerReply::Done) => done += 1,
                Ok(CategorizerReply::Error(e)) => {
                    first_error.get_or_insert(e);
                }
                Ok(other) => {
                    first_error.get_or_insert(CategorizerError::Unavailable(format!(
                        "node {node} answered {other:?}"
                    )));
                }
                // A replica removed meanwhile does not undo the others' answers.
                Err(ReplyError::Removed { .. }) => {}
                Err(e) => {
                    first_error.get_or_insert(CategorizerError::Unavailable(e.to_string()));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None if done > 0 => Ok(()),
            None => Err(CategorizerError::Unavailable(
                "no replica applied the update".into(),
            )),
        }
    }
}

/// The guess of a `Classify` reply.
fn guess_of(reply: CategorizerReply) -> Result<Guess, CategorizerError> {
    match reply {
        CategorizerReply::Guess {
            label,
            class,
            score,
        } => Ok(Guess {
            label,
            class: class as usize,
            score,
        }),
        CategorizerReply::Error(e) => Err(e),
        other => Err(CategorizerError::Unavailable(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

impl Categorizers for GroupCategorizers {
    fn install_model(&self, tag: u32, model: ModelFiles) -> Result<(), CategorizerError> {
        // Load it once here, so a corrupt or inconsistent model is refused before anything is
        // replicated.
        Classifier::from_files(&model)?;
        self.router.update(
            tag,
            &CategorizerUpdate::Install {
                tag,
                model: model.into(),
            },
        )
    }

    fn remove_model(&self, tag: u32) -> Result<(), CategorizerError> {
        self.router.update(tag, &CategorizerUpdate::Remove { tag })
    }

    fn classify(&self, tag: u32, photo: Vec<u8>) -> Result<Guess, CategorizerError> {
        let Some(lane) = self.lanes.get(tag as usize % FRONT_LANES) else {
            return self.router.classify(tag, photo);
        };
        lane.call((tag, photo))
            .map_err(|e| CategorizerError::Unavailable(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn state(parts: &[(u64, &[u8])]) -> Vec<u8> {
        let mut s = 1u64.to_le_bytes().to_vec();
        s.extend_from_slice(&7u32.to_le_bytes());
        for (claimed, bytes) in parts {
            s.extend_from_slice(&claimed.to_le_bytes());
            s.extend_from_slice(bytes);
        }
        s
    }

    #[test]
    fn a_state_round_trips_and_a_truncated_one_is_refused() {
        let good = state(&[(3, b"a\nb"), (2, b"{}"), (4, b"wxyz")]);
        let mut tier = CategorizerTier::default();
        tier.load(&mut good.as_slice()).unwrap();
        assert_eq!(tier.tags(), vec![7]);
        let mut again = Vec::new();
        tier.save(&mut again).unwrap();
        assert_eq!(again, good);
        // A part that claims a gigabyte but carries ten bytes: an error naming what arrived,
        // and the replica keeps its models.
        let short = state(&[(3, b"a\nb"), (1 << 30, b"0123456789")]);
        let e = tier.load(&mut short.as_slice()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("after 10 of"), "{e}");
        assert_eq!(tier.tags(), vec![7]);
        // Beyond the bound on one part: refused before reading it.
        let huge = state(&[((1 << 30) + 1, b"")]);
        let e = tier.load(&mut huge.as_slice()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
