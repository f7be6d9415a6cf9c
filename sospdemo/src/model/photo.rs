//! Turning a photo file into the network's input, the way torchvision's ImageNet evaluation
//! transform does: decode, convert to RGB, resize the shorter side (bilinear, antialiased),
//! centre-crop a square, scale to [0, 1], subtract the mean and divide by the standard
//! deviation per channel.

use std::io::Cursor;

use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader, Limits, RgbImage};

use super::arch::Architecture;
use super::ModelError;

/// Largest photo side accepted by the decoder.
pub const MAX_PHOTO_SIDE: u32 = 16_384;
/// Most memory the decoder may allocate for one photo.
const MAX_DECODE_BYTES: u64 = 512 << 20;
/// Largest ratio of the longer side to the shorter side.
const MAX_ASPECT: u64 = 32;

/// How a photo becomes a network input: the geometry and normalisation of an architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Shorter side after resizing.
    pub resize: u32,
    /// Side of the square centre crop (the network input).
    pub crop: u32,
    /// Per-channel mean of values in [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
}

impl Preprocess {
    /// The transform an architecture expects.
    pub fn for_architecture(arch: &Architecture) -> Self {
        Self {
            resize: u32::try_from(arch.resize_side()).unwrap_or(u32::MAX),
            crop: u32::try_from(arch.input_size).unwrap_or(u32::MAX),
            mean: arch.mean,
            std: arch.std,
        }
    }

    /// Decodes a JPEG or PNG file and returns its input tensor `[3, crop, crop]`.
    pub fn photo_to_tensor(&self, bytes: &[u8]) -> Result<Tensor, ModelError> {
        let image = decode_photo(bytes)?;
        self.image_to_tensor(&image)
    }

    /// The input tensor `[3, crop, crop]` of a decoded image (any colour type: grey, alpha and
    /// 16-bit images are converted to 8-bit RGB; alpha is dropped, as PIL's `convert("RGB")`).
    pub fn image_to_tensor(&self, image: &DynamicImage) -> Result<Tensor, ModelError> {
        let rgb = image.to_rgb8();
        let cropped = self.resize_and_crop(&rgb)?;
        let side = self.crop as usize;
        let plane = side * side;
        let mut data = vec![0f32; 3 * plane];
        for (i, px) in cropped.pixels().enumerate() {
            for c in 0..3 {
                data[c * plane + i] = (f32::from(px[c]) / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        Ok(Tensor::from_vec(data, (3, side, side), &Device::Cpu)?)
    }

    /// Resizes the shorter side to `resize` and crops the centre `crop`×`crop` square.
    pub fn resize_and_crop(&self, rgb: &RgbImage) -> Result<RgbImage, ModelError> {
        let (w, h) = rgb.dimensions();
        if w == 0 || h == 0 {
            return Err(ModelError::PhotoShape {
                width: w,
                height: h,
            });
        }
        let (short, long) = (w.min(h) as u64, w.max(h) as u64);
        if long > MAX_ASPECT * short {
            return Err(ModelError::PhotoShape {
                width: w,
                height: h,
            });
        }
        // torchvision: the shorter side becomes `resize`, the longer one int(resize * long / short).
        let size = u64::from(self.resize);
        let new_long = u32::try_from(size * long / short).unwrap_or(u32::MAX);
        let (nw, nh) = if w <= h {
            (self.resize, new_long)
        } else {
            (new_long, self.resize)
        };
        let resized = if (nw, nh) == (w, h) {
            rgb.clone()
        } else {
            image::imageops::resize(rgb, nw, nh, FilterType::Triangle)
        };
        // torchvision: top = int(round((h - crop) / 2)), Python rounding (half to even).
        let offset = |full: u32| ((f64::from(full) - f64::from(self.crop)) / 2.0).round_ties_even();
        let (left, top) = (offset(nw) as u32, offset(nh) as u32);
        Ok(image::imageops::crop_imm(&resized, left, top, self.crop, self.crop).to_image())
    }
}

/// Decodes a JPEG or PNG photo, refusing other formats, truncated files and absurd sizes.
pub fn decode_photo(bytes: &[u8]) -> Result<DynamicImage, ModelError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ModelError::NotAPhoto(e.to_string()))?;
    match reader.format() {
        Some(ImageFormat::Jpeg) => {
            if !jpeg_is_complete(bytes) {
                return Err(ModelError::NotAPhoto(
                    "the JPEG file is truncated (it ends before its end-of-image marker)".into(),
                ));
            }
        }
        Some(ImageFormat::Png) => {}
        Some(other) => {
            return Err(ModelError::NotAPhoto(format!(
                "{other:?} photos are not supported (JPEG or PNG only)"
            )))
        }
        None => {
            return Err(ModelError::NotAPhoto(
                "not a JPEG or PNG file (unrecognised signature)".into(),
            ))
        }
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_PHOTO_SIDE);
    limits.max_image_height = Some(MAX_PHOTO_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    let mut reader = reader;
    reader.limits(limits);
    reader
        .decode()
        .map_err(|e| ModelError::NotAPhoto(e.to_string()))
}

/// Whether a JPEG file's marker structure runs all the way to its end-of-image marker.
///
/// The JPEG decoder fills a scan that was cut off with grey instead of failing, so a
/// truncated upload would otherwise be classified as if it were whole. This walks the marker
/// segments (skipping entropy-coded data, where `FF` is always followed by `00` or a restart
/// marker) and says whether `FF D9` is reached before the bytes run out.
fn jpeg_is_complete(b: &[u8]) -> bool {
    let byte = |i: usize| b.get(i).copied();
    if byte(0) != Some(0xFF) || byte(1) != Some(0xD8) {
        return false;
    }
    let mut i = 2;
    loop {
        if byte(i) != Some(0xFF) {
            return false;
        }
        // Any number of fill bytes may precede a marker.
        while byte(i + 1) == Some(0xFF) {
            i += 1;
        }
        let Some(marker) = byte(i + 1) else {
            return false;
        };
        match marker {
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => {
                i += 2;
                continue;
            }
            _ => {}
        }
        let (Some(hi), Some(lo)) = (byte(i + 2), byte(i + 3)) else {
            return false;
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len < 2 {
            return false;
        }
        i += 2 + len;
        if marker == 0xDA {
            // Entropy-coded data up to the next marker.
            loop {
                match (byte(i), byte(i + 1)) {
                    (Some(0xFF), Some(0x00 | 0xD0..=0xD7)) => i += 2,
                    (Some(0xFF), Some(_)) => break,
                    (Some(_), _) => i += 1,
                    (None, _) => return false,
                }
            }
        }
    }
}
