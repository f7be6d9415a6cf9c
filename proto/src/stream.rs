//! The chunked-stream rules of `Whatsthis` and `InstallModel`: cutting a payload into messages
//! on the sending side, and checking and reassembling them on the receiving side.

use crate::{
    install_model_request::ModelChunk, photo_request::PhotoChunk, InstallModelRequest,
    ModelMetadata, PhotoMetadata, PhotoRequest,
};

/// Size of the payload slices that the senders in this crate put in each message (32 KiB).
pub const CHUNK_SIZE: usize = 32 * 1024;

/// Default bound on the declared size of a photo accepted by [`PhotoAssembler`] (64 MiB).
pub const DEFAULT_MAX_PHOTO_SIZE: u64 = 64 << 20;

/// Default bound on the declared total size of a model accepted by [`ModelAssembler`]
/// (256 MiB: an ImageNet ResNet50 in 32-bit floats is about 98 MiB).
pub const DEFAULT_MAX_MODEL_SIZE: u64 = 256 << 20;

/// Why a chunked stream is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The stream ended before any message arrived.
    #[error("the stream is empty: its first message must carry the metadata")]
    Empty,
    /// The first message carries data instead of the metadata.
    #[error("the first message of the stream must carry the metadata, not data")]
    MissingMetadata,
    /// A second metadata message arrived.
    #[error("the stream carries the metadata twice")]
    DuplicateMetadata,
    /// A message carries neither metadata nor data.
    #[error("a message of the stream carries neither metadata nor data")]
    EmptyMessage,
    /// A photo request names no model tag.
    #[error("the photo metadata names no model tag")]
    NoTags,
    /// The declared size exceeds the receiver's bound.
    #[error("the declared size of {declared} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Declared size in bytes.
        declared: u64,
        /// The receiver's bound in bytes.
        limit: u64,
    },
    /// More data arrived than declared.
    #[error("the stream carries more than the {declared} bytes its metadata declared")]
    TooLong {
        /// Declared size in bytes.
        declared: u64,
    },
    /// The stream ended before the declared size was reached.
    #[error("the stream ended after {received} of the {declared} bytes its metadata declared")]
    TooShort {
        /// Declared size in bytes.
        declared: u64,
        /// Bytes received.
        received: u64,
    },
    /// A payload to send does not fit the protocol's 32-bit size fields.
    #[error("a payload of {len} bytes does not fit the protocol's 32-bit size field")]
    SizeOverflow {
        /// Length of the payload in bytes.
        len: u64,
    },
}

impl From<StreamError> for tonic::Status {
    fn from(e: StreamError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

fn size_u32(len: usize) -> Result<u32, StreamError> {
    u32::try_from(len).map_err(|_| StreamError::SizeOverflow { len: len as u64 })
}

/// Cuts a photo into a `Whatsthis` stream: the metadata, then [`CHUNK_SIZE`] slices.
pub fn photo_requests(tags: Vec<u32>, photo: &[u8]) -> Result<Vec<PhotoRequest>, StreamError> {
    let metadata = PhotoMetadata {
        photo_size: size_u32(photo.len())?,
        tags,
    };
    let mut out = Vec::with_capacity(1 + photo.len().div_ceil(CHUNK_SIZE));
    out.push(PhotoRequest {
        photo_chunk: Some(PhotoChunk::Metadata(metadata)),
    });
    out.extend(photo.chunks(CHUNK_SIZE).map(|c| PhotoRequest {
        photo_chunk: Some(PhotoChunk::FileData(c.to_vec())),
    }));
    Ok(out)
}

/// Cuts a model into an `InstallModel` stream: the metadata, then the synset, architecture and
/// weights files (in that order, as one byte sequence) in [`CHUNK_SIZE`] slices.
pub fn install_model_requests(
    tag: u32,
    synset: &[u8],
    architecture: &[u8],
    weights: &[u8],
) -> Result<Vec<InstallModelRequest>, StreamError> {
    let total = synset.len() as u64 + architecture.len() as u64 + weights.len() as u64;
    if total > u64::from(u32::MAX) {
        return Err(StreamError::SizeOverflow { len: total });
    }
    let metadata = ModelMetadata {
        tag,
        synset_size: size_u32(synset.len())?,
        symbol_size: size_u32(architecture.len())?,
        params_size: size_u32(weights.len())?,
    };
    let mut all = Vec::with_capacity(synset.len() + architecture.len() + weights.len());
    all.extend_from_slice(synset);
    all.extend_from_slice(architecture);
    all.extend_from_slice(weights);
    let mut out = Vec::with_capacity(1 + all.len().div_ceil(CHUNK_SIZE));
    out.push(InstallModelRequest {
        model_chunk: Some(ModelChunk::Metadata(metadata)),
    });
    out.extend(all.chunks(CHUNK_SIZE).map(|c| InstallModelRequest {
        model_chunk: Some(ModelChunk::FileData(c.to_vec())),
    }));
    Ok(out)
}

/// Collects the data slices of one stream against a declared size.
#[derive(Debug)]
struct Payload {
    declared: u64,
    data: Vec<u8>,
}

impl Payload {
    fn new(declared: u64, limit: u64) -> Result<Self, StreamError> {
        if declared > limit {
            return Err(StreamError::TooLarge { declared, limit });
        }
        // Reserve at most a few slices up front: a declared size is a claim, not a fact.
        let reserve = usize::try_from(declared.min(16 * CHUNK_SIZE as u64)).unwrap_or(0);
        Ok(Self {
            declared,
            data: Vec::with_capacity(reserve),
        })
    }

    fn push(&mut self, chunk: &[u8]) -> Result<(), StreamError> {
        if self.data.len() as u64 + chunk.len() as u64 > self.declared {
            return Err(StreamError::TooLong {
                declared: self.declared,
            });
        }
        self.data.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>, StreamError> {
        if (self.data.len() as u64) < self.declared {
            return Err(StreamError::TooShort {
                declared: self.declared,
                received: self.data.len() as u64,
            });
        }
        Ok(self.data)
    }
}

/// A photo received through `Whatsthis`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPhoto {
    /// Tags of the models to ask, in the client's order.
    pub tags: Vec<u32>,
    /// The photo file.
    pub data: Vec<u8>,
}

/// Checks and reassembles a `Whatsthis` stream, one message at a time.
#[derive(Debug)]
pub struct PhotoAssembler {
    limit: u64,
    state: Option<(Vec<u32>, Payload)>,
}

impl PhotoAssembler {
    /// An assembler that refuses photos declared larger than `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self { limit, state: None }
    }

    /// Takes the next message of the stream.
    pub fn push(&mut self, msg: PhotoRequest) -> Result<(), StreamError> {
        match (msg.photo_chunk, &mut self.state) {
            (None, _) => Err(StreamError::EmptyMessage),
            (Some(PhotoChunk::Metadata(_)), Some(_)) => Err(StreamError::DuplicateMetadata),
            (Some(PhotoChunk::Metadata(m)), state @ None) => {
                if m.tags.is_empty() {
                    return Err(StreamError::NoTags);
                }
                *state = Some((m.tags, Payload::new(u64::from(m.photo_size), self.limit)?));
                Ok(())
            }
            (Some(PhotoChunk::FileData(_)), None) => Err(StreamError::MissingMetadata),
            (Some(PhotoChunk::FileData(d)), Some((_, payload))) => payload.push(&d),
        }
    }

    /// Ends the stream: the photo, if the data matched the declared size.
    pub fn finish(self) -> Result<UploadedPhoto, StreamError> {
        let (tags, payload) = self.state.ok_or(StreamError::Empty)?;
        Ok(UploadedPhoto {
            tags,
            data: payload.finish()?,
        })
    }
}

impl Default for PhotoAssembler {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PHOTO_SIZE)
    }
}

/// A model received through `InstallModel`: the three files of a model and its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedModel {
    /// Tag to install the model under.
    pub tag: u32,
    /// The synset file: one label per line.
    pub synset: Vec<u8>,
    /// The architecture file (JSON).
    pub architecture: Vec<u8>,
    /// The weights file (safetensors).
    pub weights: Vec<u8>,
}

/// Checks and reassembles an `InstallModel` stream, one message at a time.
#[derive(Debug)]
pub struct ModelAssembler {
    limit: u64,
    state: Option<(ModelMetadata, Payload)>,
}

impl ModelAssembler {
    /// An assembler that refuses models whose three files together are declared larger than
    /// `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self { limit, state: None }
    }

    /// Takes the next message of the stream.
    pub fn push(&mut self, msg: InstallModelRequest) -> Result<(), StreamError> {
        match (msg.model_chunk, &mut self.state) {
            (None, _) => Err(StreamError::EmptyMessage),
            (Some(ModelChunk::Metadata(_)), Some(_)) => Err(StreamError::DuplicateMetadata),
            (Some(ModelChunk::Metadata(m)), state @ None) => {
                let total =
                    u64::from(m.synset_size) + u64::from(m.symbol_size) + u64::from(m.params_size);
                *state = Some((m, Payload::new(total, self.limit)?));
                Ok(())
            }
            (Some(ModelChunk::FileData(_)), None) => Err(StreamError::MissingMetadata),
            (Some(ModelChunk::FileData(d)), Some((_, payload))) => payload.push(&d),
        }
    }

    /// Ends the stream: the model's three files, if the data matched the declared sizes.
    pub fn finish(self) -> Result<UploadedModel, StreamError> {
        let (meta, payload) = self.state.ok_or(StreamError::Empty)?;
        let mut synset = payload.finish()?;
        // The payload has exactly synset + symbol + params bytes, so these splits are in range.
        let mut architecture = synset.split_off(meta.synset_size as usize);
        let weights = architecture.split_off(meta.symbol_size as usize);
        Ok(UploadedModel {
            tag: meta.tag,
            synset,
            architecture,
            weights,
        })
    }
}

impl Default for ModelAssembler {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MODEL_SIZE)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn photo(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn photo_round_trip() {
        for len in [
            0,
            1,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            3 * CHUNK_SIZE + 5,
        ] {
            let data = photo(len);
            let msgs = photo_requests(vec![1, 2], &data).unwrap();
            assert_eq!(msgs.len(), 1 + len.div_ceil(CHUNK_SIZE));
            let mut a = PhotoAssembler::default();
            for m in msgs {
                a.push(m).unwrap();
            }
            let got = a.finish().unwrap();
            assert_eq!(got.tags, vec![1, 2]);
            assert_eq!(got.data, data);
        }
    }

    #[test]
    fn model_round_trip() {
        let (s, a, w) = (photo(10), photo(CHUNK_SIZE + 3), photo(2 * CHUNK_SIZE));
        let msgs = install_model_requests(7, &s, &a, &w).unwrap();
        let mut asm = ModelAssembler::default();
        for m in msgs {
            asm.push(m).unwrap();
        }
        let got = asm.finish().unwrap();
        assert_eq!(got.tag, 7);
        assert_eq!((got.synset, got.architecture, got.weights), (s, a, w));
    }

    #[test]
    fn photo_stream_violations() {
        let data = photo(100);
        let mut msgs = photo_requests(vec![3], &data).unwrap();

        // Data before metadata.
        let mut a = PhotoAssembler::default();
        assert_eq!(a.push(msgs[1].clone()), Err(StreamError::MissingMetadata));

        // Truncated stream.
        let mut a = PhotoAssembler::default();
        a.push(msgs[0].clone()).unwrap();
        assert_eq!(
            a.finish(),
            Err(StreamError::TooShort {
                declared: 100,
                received: 0
            })
        );

        // Too much data.
        let mut a = PhotoAssembler::default();
        a.push(msgs[0].clone()).unwrap();
        a.push(msgs[1].clone()).unwrap();
        assert_eq!(
            a.push(msgs[1].clone()),
            Err(StreamError::TooLong { declared: 100 })
        );

        // Metadata twice, empty message, empty stream, no tags, over the limit.
        let mut a = PhotoAssembler::default();
        a.push(msgs[0].clone()).unwrap();
        assert_eq!(a.push(msgs[0].clone()), Err(StreamError::DuplicateMetadata));
        assert_eq!(
            a.push(PhotoRequest { photo_chunk: None }),
            Err(StreamError::EmptyMessage)
        );
        assert_eq!(PhotoAssembler::default().finish(), Err(StreamError::Empty));
        let mut a = PhotoAssembler::default();
        assert_eq!(
            a.push(photo_requests(vec![], &data).unwrap().remove(0)),
            Err(StreamError::NoTags)
        );
        let mut a = PhotoAssembler::new(99);
        assert_eq!(
            a.push(msgs.remove(0)),
            Err(StreamError::TooLarge {
                declared: 100,
                limit: 99
            })
        );
    }

    #[test]
    fn model_stream_violations() {
        let msgs = install_model_requests(1, b"rose\n", b"{}", &photo(50)).unwrap();
        let mut a = ModelAssembler::default();
        a.push(msgs[0].clone()).unwrap();
        assert_eq!(
            a.finish(),
            Err(StreamError::TooShort {
                declared: 57,
                received: 0
            })
        );
        let mut a = ModelAssembler::new(56);
        assert!(matches!(
            a.push(msgs[0].clone()),
            Err(StreamError::TooLarge { .. })
        ));
        let status: tonic::Status = StreamError::Empty.into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
