//! The CPU kernels of inference, written for batch-1 latency on a couple of cores.
//!
//! * [`PackedConv`]: a convolution whose kernel is laid out once, at load time, as the
//!   `[c_out, c_in·kh·kw]` matrix of one GEMM; a forward pass is an im2col (skipped for 1×1
//!   stride-1 convolutions, whose input already is the matrix) and that GEMM, followed by one
//!   pass that adds the bias and an optional residual and applies an optional ReLU.
//! * [`channel_affine`], [`add`] and [`relu`]: the pointwise operations that cannot be fused
//!   into a convolution (a pre-activation batch normalisation, a residual sum read twice).
//!
//! Everything runs on rayon's global pool, the one candle's GEMM already uses, and never
//! calls candle's pointwise kernels: those run on a second pool of spinning workers, and on a
//! two-core machine the two pools took turns stealing each other's core (a third of the
//! profile was spent waiting at that pool's barrier).
//!
//! Tensors are NCHW f32 on the CPU. This module owns no state beyond the packed kernels and
//! must not change what a network computes: only the order of floating-point sums may differ
//! from candle's convolution.

use candle_core::{DType, Device, Storage, Tensor};
use rayon::prelude::*;

/// Elements below which a pointwise pass stays on the calling thread.
const PAR_MIN: usize = 1 << 15;

/// Reads a tensor's values as a contiguous f32 slice (copying only if it is strided or not
/// f32) and passes them to `f`.
fn with_f32<R>(
    t: &Tensor,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let t = if t.dtype() == DType::F32 {
        t.contiguous()?
    } else {
        t.to_dtype(DType::F32)?.contiguous()?
    };
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(candle_core::Error::Msg(
            "the inference kernels run on the CPU only".into(),
        ));
    };
    let data = cpu.as_slice::<f32>()?;
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("tensor not contiguous after copy".into()))?;
    f(&data[start..end])
}

/// Splits `out` into chunks of whole rows of `row` elements, each at least [`PAR_MIN`]
/// elements when there is enough work, and runs `f(first_row, chunk)` on them in parallel.
fn par_rows(out: &mut [f32], row: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let row = row.max(1);
    if out.len() < 2 * PAR_MIN {
        f(0, out);
        return;
    }
    let rows_per_chunk = PAR_MIN.div_ceil(row);
    out.par_chunks_mut(rows_per_chunk * row)
        .enumerate()
        .for_each(|(i, chunk)| f(i * rows_per_chunk, chunk));
}

/// A convolution (groups = 1) with its kernel packed for GEMM and its bias.
#[derive(Debug, Clone)]
pub(crate) struct PackedConv {
    /// `[c_out, c_in·kh·kw]`, contiguous; columns in (channel, row, column) order.
    weight: Tensor,
    bias: Option<Vec<f32>>,
    c_in: usize,
    c_out: usize,
    kernel: [usize; 2],
    stride: usize,
    pad: [usize; 2],
    dilation: usize,
}

impl PackedConv {
    /// Packs an `[c_out, c_in, kh, kw]` kernel and an optional bias of `c_out` values.
    pub(crate) fn new(
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        pad: [usize; 2],
        dilation: usize,
    ) -> candle_core::Result<Self> {
        let (c_out, c_in, kh, kw) = weight.dims4()?;
        if stride == 0 || dilation == 0 || kh == 0 || kw == 0 {
            return Err(candle_core::Error::Msg(
                "a convolution needs a kernel, a stride and a dilation of at least 1".into(),
            ));
        }
        let packed = weight
            .to_dtype(DType::F32)?
            .reshape((c_out, c_in * kh * kw))?
            .contiguous()?;
        let bias = match bias {
            Some(b) => {
                let v = b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                if v.len() != c_out {
                    return Err(candle_core::Error::Msg(format!(
                        "convolution bias has {} values for {c_out} filters",
                        v.len()
                    )));
                }
                Some(v)
            }
            None => None,
        };
        Ok(Self {
            weight: packed,
            bias,
            c_in,
            c_out,
            kernel: [kh, kw],
            stride,
            pad,
            dilation,
        })
    }

    /// Output side along one axis for an input side `len`, if the window fits.
    fn out_side(&self, len: usize, axis: usize) -> Option<usize> {
        let span = self.dilation * (self.kernel[axis] - 1) + 1;
        (len + 2 * self.pad[axis])
            .checked_sub(span)
            .map(|d| d / self.stride + 1)
    }

    /// Elements of the largest buffer a forward pass over `[n, c_in, h, w]` allocates (the
    /// patch matrix or the output), or `None` if the count overflows or the kernel does not
    /// fit.
    pub(crate) fn buffer_elements(&self, n: usize, h: usize, w: usize) -> Option<usize> {
        let plane = self.out_side(h, 0)?.checked_mul(self.out_side(w, 1)?)?;
        let taps = self.kernel[0].checked_mul(self.kernel[1])?;
        let cols = self.c_in.checked_mul(taps)?.checked_mul(plane)?;
        let out = n.checked_mul(self.c_out)?.checked_mul(plane)?;
        Some(cols.max(out))
    }

    /// Whether the input itself is the GEMM's right-hand matrix (1×1, stride 1, no padding).
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == 1 && self.pad == [0, 0]
    }

    /// `relu?(conv(x) + bias + residual)` for `x` of shape `[n, c_in, h, w]`; `residual`, if
    /// any, has the output's shape.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if c != self.c_in {
            return Err(candle_core::Error::Msg(format!(
                "convolution expects {} input channels, got {c}",
                self.c_in
            )));
        }
        let (Some(oh), Some(ow)) = (self.out_side(h, 0), self.out_side(w, 1)) else {
            return Err(candle_core::Error::Msg(format!(
                "a {}×{} kernel does not fit a {h}×{w} input",
                self.kernel[0], self.kernel[1]
            )));
        };
        let plane = oh * ow;
        if let Some(r) = residual {
            if r.dims() != [n, self.c_out, oh, ow] {
                return Err(candle_core::Error::Msg(format!(
                    "residual of shape {:?} added to a convolution output of {:?}",
                    r.dims(),
                    [n, self.c_out, oh, ow]
                )));
            }
        }
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let mut out = vec![0f32; n * self.c_out * plane];
        for (b, out_b) in out.chunks_mut(self.c_out * plane).enumerate() {
            let cols = if self.is_pointwise() {
                x.get(b)?.reshape((c, plane))?
            } else {
                let k = c * self.kernel[0] * self.kernel[1];
                let cols = with_f32(&x.get(b)?, |img| Ok(self.im2col(img, h, w, oh, ow)))?;
                Tensor::from_vec(cols, (k, plane), &Device::Cpu)?
            };
            let res = residual.map(|r| r.get(b)).transpose()?;
            match &res {
                Some(r) => with_f32(r, |r| self.multiply(&cols, out_b, Some(r), plane, relu))?,
                None => self.multiply(&cols, out_b, None, plane, relu)?,
            }
        }
        Tensor::from_vec(out, (n, self.c_out, oh, ow), &Device::Cpu)
    }

    /// The `[c_in·kh·kw, oh·ow]` patch matrix of one image `[c_in, h, w]`; padding reads 0.
    fn im2col(&self, img: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
        let [kh, kw] = self.kernel;
        let plane = oh * ow;
        let mut cols = vec![0f32; self.c_in * kh * kw * plane];
        let (s, d) = (self.stride, self.dilation);
        let [ph, pw] = self.pad;
        // Row `r` of the matrix is input channel `r / (kh·kw)` seen through kernel tap
        // (`ky`, `kx`): output pixel (oy, ox) reads input (oy·s + ky·d − ph, ox·s + kx·d − pw).
        let fill = |r: usize, dst: &mut [f32]| {
            let (ci, tap) = (r / (kh * kw), r % (kh * kw));
            let (ky, kx) = (tap / kw, tap % kw);
            let src = &img[ci * h * w..(ci + 1) * h * w];
            let shift = kx * d;
            // Output columns whose input column lies inside the row: [lo, hi).
            let lo = pw.saturating_sub(shift).div_ceil(s);
            let hi = (w + pw)
                .checked_sub(shift)
                .map_or(0, |span| span.div_ceil(s))
                .min(ow);
            if lo >= hi {
                return;
            }
            let first = lo * s + shift - pw;
            for (oy, dst_row) in dst.chunks_mut(ow).enumerate() {
                let iy = (oy * s + ky * d) as isize - ph as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let row = &src[iy as usize * w..(iy as usize + 1) * w];
                if s == 1 {
                    dst_row[lo..hi].copy_from_slice(&row[first..first + (hi - lo)]);
                } else {
                    for (o, v) in dst_row[lo..hi]
                        .iter_mut()
                        .zip(row[first..].iter().step_by(s))
                    {
                        *o = *v;
                    }
                }
            }
        };
        par_rows(&mut cols, plane, |first_row, chunk| {
            for (i, dst) in chunk.chunks_mut(plane).enumerate() {
                fill(first_row + i, dst);
            }
        });
        cols
    }

    /// `out = relu?(weight · cols + bias + residual)` for one image, all `[c_out, plane]`.
    /// Large products are split by output channels between two tasks, each running its
    /// GEMM and then its share of the epilogue while the rows are still in cache.
    fn multiply(
        &self,
        cols: &Tensor,
        out: &mut [f32],
        residual: Option<&[f32]>,
        plane: usize,
        relu: bool,
    ) -> candle_core::Result<()> {
        let part = |lo: usize, out: &mut [f32], residual: Option<&[f32]>| {
            let rows = out.len() / plane;
            let product = self.weight.narrow(0, lo, rows)?.matmul(cols)?;
            let bias = self.bias.as_deref().map(|b| &b[lo..lo + rows]);
            with_f32(&product, |p| {
                epilogue(out, p, bias, residual, plane, relu);
                Ok(())
            })
        };
        let work = self.c_out * plane * cols.dims()[0];
        if self.c_out < 32 || work < SPLIT_MIN_WORK {
            return part(0, out, residual);
        }
        let mid = (self.c_out / 2).next_multiple_of(8).min(self.c_out);
        let (out0, out1) = out.split_at_mut(mid * plane);
        let (res0, res1) = match residual {
            Some(r) => {
                let (a, b) = r.split_at(mid * plane);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        let (a, b) = rayon::join(|| part(0, out0, res0), || part(mid, out1, res1));
        a.and(b)
    }
}

/// Multiply-adds below which a GEMM is not split between tasks.
const SPLIT_MIN_WORK: usize = 1 << 22;

/// Writes `relu?(product + bias + residual)` into `out`, all `[channels, plane]`.
fn epilogue(
    out: &mut [f32],
    product: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    plane: usize,
    relu: bool,
) {
    par_rows(out, plane, |first, chunk| {
        let start = first * plane;
        let src = &product[start..start + chunk.len()];
        for (i, (o_row, p_row)) in chunk.chunks_mut(plane).zip(src.chunks(plane)).enumerate() {
            let b = bias.map_or(0.0, |b| b[first + i]);
            let row_start = start + i * plane;
            match residual {
                Some(r) => {
                    let r_row = &r[row_start..row_start + plane];
                    for ((o, p), r) in o_row.iter_mut().zip(p_row).zip(r_row) {
                        *o = p + b + r;
                    }
                }
                None => {
                    for (o, p) in o_row.iter_mut().zip(p_row) {
                        *o = p + b;
                    }
                }
            }
            if relu {
                for o in o_row.iter_mut() {
                    *o = o.max(0.0);
                }
            }
        }
    });
}

/// `relu?(x · scale[c] + shift[c])` per channel `c` of an NCHW tensor (a batch
/// normalisation at inference).
pub(crate) fn channel_affine(
    x: &Tensor,
    scale: &[f32],
    shift: &[f32],
    relu: bool,
) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let c = dims.get(1).copied().unwrap_or(1);
    if scale.len() != c || shift.len() != c {
        return Err(candle_core::Error::Msg(format!(
            "per-channel scale of {} values for {c} channels",
            scale.len()
        )));
    }
    let plane: usize = dims.iter().skip(2).product();
    if plane == 0 || x.elem_count() == 0 {
        return Ok(x.clone());
    }
    let out = with_f32(x, |src| {
        let mut out = vec![0f32; src.len()];
        par_rows(&mut out, plane, |first, chunk| {
            let start = first * plane;
            for (i, o_row) in chunk.chunks_mut(plane).enumerate() {
                let ch = (first + i) % c;
                let (a, b) = (scale[ch], shift[ch]);
                let s_row = &src[start + i * plane..start + (i + 1) * plane];
                for (o, v) in o_row.iter_mut().zip(s_row) {
                    let y = v * a + b;
                    *o = if relu { y.max(0.0) } else { y };
                }
            }
        });
        Ok(out)
    })?;
    Tensor::from_vec(out, dims, &Device::Cpu)
}

/// `relu?(a + b)` for two tensors of the same shape.
pub(crate) fn add(a: &Tensor, b: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
    if a.dims() != b.dims() {
        return Err(candle_core::Error::Msg(format!(
            "cannot add shapes {:?} and {:?} element by element",
            a.dims(),
            b.dims()
        )));
    }
    let out = with_f32(a, |a| {
        with_f32(b, |b| {
            let mut out = vec![0f32; a.len()];
            par_rows(&mut out, 1, |first, chunk| {
                let (a, b) = (&a[first..], &b[first..]);
                for ((o, x), y) in chunk.iter_mut().zip(a).zip(b) {
                    let s = x + y;
                    *o = if relu { s.max(0.0) } else { s };
                }
            });
            Ok(out)
        })
    })?;
    Tensor::from_vec(out, a.dims(), &Device::Cpu)
}

/// `max(x, 0)` element by element.
pub(crate) fn relu(x: &Tensor) -> candle_core::Result<Tensor> {
    let out = with_f32(x, |src| {
        let mut out = vec![0f32; src.len()];
        par_rows(&mut out, 1, |first, chunk| {
            for (o, v) in chunk.iter_mut().zip(&src[first..]) {
                *o = v.max(0.0);
            }
        });
        Ok(out)
    })?;
    Tensor::from_vec(out, x.dims(), &Device::Cpu)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn close(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// candle's convolution with bias, residual and ReLU applied one after the other.
    fn reference(
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
        (stride, pad, dilation): (usize, usize, usize),
    ) -> Tensor {
        let c = w.dims()[0];
        let mut y = x
            .conv2d(w, pad, stride, dilation, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, c, 1, 1)).unwrap())
            .unwrap();
        if let Some(r) = residual {
            y = (y + r).unwrap();
        }
        if relu {
            y = y.relu().unwrap();
        }
        y
    }

    #[test]
    fn packed_convolution_matches_candles() {
        let dev = Device::Cpu;
        // (c_in, c_out, kernel, stride, pad, dilation, side, batch)
        let cases = [
            (8, 16, 1, 1, 0, 1, 9, 1),
            (8, 16, 1, 2, 0, 1, 9, 2),
            (3, 8, 7, 2, 3, 1, 20, 1),
            (16, 16, 3, 1, 1, 1, 11, 2),
            (16, 8, 3, 2, 1, 1, 12, 1),
            (4, 4, 3, 1, 2, 2, 10, 1),
            (4, 6, 3, 3, 0, 1, 13, 1),
            // Large enough that im2col and the epilogue run in parallel.
            (64, 64, 3, 1, 1, 1, 40, 1),
        ];
        for (i, &(ci, co, k, s, p, d, side, n)) in cases.iter().enumerate() {
            let x = Tensor::randn(0f32, 1.0, (n, ci, side, side), &dev).unwrap();
            let w = Tensor::randn(0f32, 0.3, (co, ci, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, co, &dev).unwrap();
            let conv = PackedConv::new(&w, Some(&b), s, [p, p], d).unwrap();
            let plain = reference(&x, &w, &b, None, false, (s, p, d));
            let res = Tensor::randn(0f32, 1.0, plain.dims(), &dev).unwrap();
            for (residual, relu) in [(None, false), (None, true), (Some(&res), true)] {
                let want = reference(&x, &w, &b, residual, relu, (s, p, d));
                let got = conv.forward(&x, residual, relu).unwrap();
                let err = close(&got, &want);
                assert!(err < 1e-4, "case {i} relu {relu}: max error {err}");
            }
        }
    }

    #[test]
    fn packed_convolution_refuses_mismatched_inputs() {
        let dev = Device::Cpu;
        let w = Tensor::zeros((4, 3, 3, 3), DType::F32, &dev).unwrap();
        let conv = PackedConv::new(&w, None, 1, [0, 0], 1).unwrap();
        let wrong_channels = Tensor::zeros((1, 2, 8, 8), DType::F32, &dev).unwrap();
        assert!(conv.forward(&wrong_channels, None, false).is_err());
        let too_small = Tensor::zeros((1, 3, 2, 2), DType::F32, &dev).unwrap();
        assert!(conv.forward(&too_small, None, false).is_err());
        let x = Tensor::zeros((1, 3, 8, 8), DType::F32, &dev).unwrap();
        let bad_residual = Tensor::zeros((1, 4, 8, 8), DType::F32, &dev).unwrap();
        assert!(conv.forward(&x, Some(&bad_residual), false).is_err());
        assert!(PackedConv::new(&w, None, 0, [0, 0], 1).is_err());
    }

    #[test]
    fn pointwise_kernels_match_candles() {
        let dev = Device::Cpu;
        for dims in [(1, 3, 5, 5), (2, 64, 32, 32)] {
            let x = Tensor::randn(0f32, 1.0, dims, &dev).unwrap();
            let y = Tensor::randn(0f32, 1.0, dims, &dev).unwrap();
            assert!(close(&relu(&x).unwrap(), &x.relu().unwrap()) == 0.0);
            let sum = (&x + &y).unwrap();
            assert!(close(&add(&x, &y, false).unwrap(), &sum) < 1e-6);
            assert!(close(&add(&x, &y, true).unwrap(), &sum.relu().unwrap()) < 1e-6);
            let c = dims.1;
            let scale: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 * 0.1).collect();
            let shift: Vec<f32> = (0..c).map(|i| i as f32 * 0.01 - 0.2).collect();
            let s = Tensor::from_vec(scale.clone(), (1, c, 1, 1), &dev).unwrap();
            let t = Tensor::from_vec(shift.clone(), (1, c, 1, 1), &dev).unwrap();
            let want = x.broadcast_mul(&s).unwrap().broadcast_add(&t).unwrap();
            let got = channel_affine(&x, &scale, &shift, false).unwrap();
            assert!(close(&got, &want) < 1e-6);
            let got = channel_affine(&x, &scale, &shift, true).unwrap();
            assert!(close(&got, &want.relu().unwrap()) < 1e-6);
        }
    }
}
