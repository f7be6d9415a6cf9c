//! Turning a photo file into the network's input. Two transforms exist:
//!
//! * [`ResizeStyle::ShorterSide`], for our own models, is torchvision's ImageNet evaluation
//!   transform: decode, convert to RGB, resize the shorter side (bilinear, antialiased),
//!   centre-crop a square, scale to [0, 1], subtract the mean and divide by the standard
//!   deviation per channel.
//! * [`ResizeStyle::Square`], for MXNet models ([`Preprocess::mxnet`]), is the original
//!   sospdemo's: decode, convert to RGB, resize to a square (`side · 8/7`, 256 for a 224
//!   input) with plain bilinear interpolation (half-pixel centres, edge pixels repeated, no
//!   antialiasing, as OpenCV's `INTER_LINEAR`), centre-crop `side`, divide by 256, no mean or
//!   standard deviation.

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

/// How a photo is resized before the centre crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeStyle {
    /// The shorter side becomes `resize`, the aspect ratio is kept (torchvision, antialiased
    /// triangle filter).
    ShorterSide,
    /// Both sides become `resize` (the original sospdemo's OpenCV bilinear resize).
    Square,
}

/// How a photo becomes a network input: the geometry and normalisation of an architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// How the photo is resized.
    pub style: ResizeStyle,
    /// Pixel values (0–255) are divided by this before the mean is subtracted: 255 for our
    /// models, 256 for MXNet's.
    pub divisor: f32,
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
            style: ResizeStyle::ShorterSide,
            divisor: 255.0,
            resize: u32::try_from(arch.resize_side()).unwrap_or(u32::MAX),
            crop: u32::try_from(arch.input_size).unwrap_or(u32::MAX),
            mean: arch.mean,
            std: arch.std,
        }
    }

    /// The original sospdemo's transform for an MXNet network with a `side`×`side` input:
    /// square resize to `side · 8 / 7` (256 for 224), centre crop, RGB divided by 256.
    pub fn mxnet(side: usize) -> Self {
        let crop = u32::try_from(side).unwrap_or(u32::MAX);
        Self {
            style: ResizeStyle::Square,
            divisor: 256.0,
            resize: crop.saturating_mul(8) / 7,
            crop,
            mean: [0.0; 3],
            std: [1.0; 3],
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
        let side = self.crop as usize;
        let plane = side * side;
        let mut data = match self.style {
            ResizeStyle::ShorterSide => {
                let cropped = self.resize_and_crop(&rgb)?;
                let mut data = vec![0f32; 3 * plane];
                for (i, px) in cropped.pixels().enumerate() {
                    for c in 0..3 {
                        data[c * plane + i] = f32::from(px[c]);
                    }
                }
                data
            }
            ResizeStyle::Square => self.square_bilinear_crop(&rgb)?,
        };
        for c in 0..3 {
            for v in &mut data[c * plane..(c + 1) * plane] {
                *v = (*v / self.divisor - self.mean[c]) / self.std[c];
            }
        }
        Ok(Tensor::from_vec(data, (3, side, side), &Device::Cpu)?)
    }

    /// The centre `crop`×`crop` of the photo bilinearly resized to `resize`×`resize`, as
    /// channel planes of unrounded pixel values. Only the cropped pixels are computed.
    ///
    /// Output pixel `d` samples source position `(d + ½)·src/resize − ½`, clamped to the
    /// image, and mixes its two neighbours linearly (in f64), along each axis.
    fn square_bilinear_crop(&self, rgb: &RgbImage) -> Result<Vec<f32>, ModelError> {
        let (w, h) = rgb.dimensions();
        if w == 0 || h == 0 || self.crop > self.resize || self.crop == 0 {
            return Err(ModelError::PhotoShape {
                width: w,
                height: h,
            });
        }
        let (long, short) = (u64::from(w.max(h)), u64::from(w.min(h)));
        if long > MAX_ASPECT * short {
            return Err(ModelError::PhotoShape {
                width: w,
                height: h,
            });
        }
        let offset = (self.resize - self.crop) / 2;
        // Per output coordinate: the two source indices and the weight of the second.
        let taps = |src: u32| -> Vec<(usize, usize, f64)> {
            let scale = f64::from(src) / f64::from(self.resize);
            (0..self.crop)
                .map(|d| {
                    let f = (f64::from(d + offset) + 0.5) * scale - 0.5;
                    let last = f64::from(src - 1);
                    if f <= 0.0 {
                        (0, 0, 0.0)
                    } else if f >= last {
                        let i = (src - 1) as usize;
                        (i, i, 0.0)
                    } else {
                        let i = f.floor();
                        (i as usize, i as usize + 1, f - i)
                    }
                })
                .collect()
        };
        let (xs, ys) = (taps(w), taps(h));
        let side = self.crop as usize;
        let plane = side * side;
        let mut data = vec![0f32; 3 * plane];
        let px = |x: usize, y: usize, c: usize| f64::from(rgb.get_pixel(x as u32, y as u32)[c]);
        for (oy, &(y0, y1, ay)) in ys.iter().enumerate() {
            for (ox, &(x0, x1, ax)) in xs.iter().enumerate() {
                for c in 0..3 {
                    let top = px(x0, y0, c) * (1.0 - ax) + px(x1, y0, c) * ax;
                    let bottom = px(x0, y1, c) * (1.0 - ax) + px(x1, y1, c) * ax;
                    data[c * plane + oy * side + ox] = (top * (1.0 - ay) + bottom * ay) as f32;
                }
            }
        }
        Ok(data)
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
