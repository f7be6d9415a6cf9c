//! 2-D pooling with MXNet's window conventions, computed directly on the CPU (candle's pooling
//! has neither padding nor the `full` convention).

use candle_core::{DType, Device, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PoolKind {
    Max,
    Avg,
    Sum,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct PoolSpec {
    pub(super) kind: PoolKind,
    pub(super) global: bool,
    pub(super) kernel: [usize; 2],
    pub(super) stride: [usize; 2],
    pub(super) pad: [usize; 2],
    /// `full` convention: output sizes round up instead of down.
    pub(super) full: bool,
    pub(super) count_include_pad: bool,
}

/// Output side of a pooling window sweep.
fn pooled_side(len: usize, k: usize, s: usize, p: usize, full: bool) -> Option<usize> {
    let span = (len + 2 * p).checked_sub(k)?;
    Some(if full { span.div_ceil(s) } else { span / s } + 1)
}

/// 2-D pooling with MXNet's semantics: windows start at `o·stride − pad`; max ignores padding;
/// avg divides by the window clipped to the padded input (`count_include_pad`) or to the input.
/// A window that covers no input cell (possible with the `full` convention and a stride larger
/// than the kernel) gives 0.
pub(super) fn pool2d(x: &Tensor, spec: &PoolSpec) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (k, s, p) = if spec.global {
        ([h, w], [1, 1], [0, 0])
    } else {
        (spec.kernel, spec.stride, spec.pad)
    };
    let (Some(oh), Some(ow)) = (
        pooled_side(h, k[0], s[0], p[0], spec.full),
        pooled_side(w, k[1], s[1], p[1], spec.full),
    ) else {
        return Err(candle_core::Error::Msg(format!(
            "a {}×{} pooling window does not fit a {h}×{w} input",
            k[0], k[1]
        )));
    };
    let elems = [n, c, oh, ow]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d));
    super::ops::guard_elements("a pooling output", elems)?;
    let data = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; n * c * oh * ow];
    let (hi, wi) = (h as i64, w as i64);
    for plane in 0..n * c {
        let src = &data[plane * h * w..(plane + 1) * h * w];
        let dst = &mut out[plane * oh * ow..(plane + 1) * oh * ow];
        for oy in 0..oh {
            let y0 = (oy * s[0]) as i64 - p[0] as i64;
            let y1_padded = (y0 + k[0] as i64).min(hi + p[0] as i64);
            let (ya, yb) = (y0.clamp(0, hi), (y0 + k[0] as i64).clamp(0, hi));
            for ox in 0..ow {
                let x0 = (ox * s[1]) as i64 - p[1] as i64;
                let x1_padded = (x0 + k[1] as i64).min(wi + p[1] as i64);
                let (xa, xb) = (x0.clamp(0, wi), (x0 + k[1] as i64).clamp(0, wi));
                let mut acc = match spec.kind {
                    PoolKind::Max => f32::NEG_INFINITY,
                    _ => 0.0,
                };
                for yy in ya..yb {
                    let row = &src[yy as usize * w..(yy as usize + 1) * w];
                    for &v in &row[xa as usize..xb.max(xa) as usize] {
                        match spec.kind {
                            PoolKind::Max => acc = acc.max(v),
                            _ => acc += v,
                        }
                    }
                }
                dst[oy * ow + ox] = match spec.kind {
                    PoolKind::Max => {
                        if acc == f32::NEG_INFINITY {
                            0.0
                        } else {
                            acc
                        }
                    }
                    PoolKind::Sum => acc,
                    PoolKind::Avg => {
                        let area = if spec.count_include_pad {
                            (y1_padded - y0) * (x1_padded - x0)
                        } else {
                            (yb - ya).max(0) * (xb - xa).max(0)
                        };
                        if area > 0 {
                            acc / area as f32
                        } else {
                            0.0
                        }
                    }
                };
            }
        }
    }
    Tensor::from_vec(out, (n, c, oh, ow), &Device::Cpu)
}
