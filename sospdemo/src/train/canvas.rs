//! A tiny software rasteriser for the procedural photos: an RGB float canvas with
//! anti-aliased ellipses, capsules (thick lines) and supersampled polygons, all placed through
//! a [`Pose`] so a whole object can be moved, scaled, turned and mirrored at once.

use image::RgbImage;

use crate::model::rng::SplitMix64;

/// An RGB colour with channels in [0, 1].
pub(crate) type Rgb = [f32; 3];

/// Where an object sits on the canvas: its local unit coordinates are scaled by `scale`,
/// mirrored horizontally if `flip`, turned by `angle` (radians) and moved to `(cx, cy)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pose {
    pub cx: f32,
    pub cy: f32,
    pub scale: f32,
    pub angle: f32,
    pub flip: bool,
}

impl Pose {
    /// Canvas position of local point `(x, y)`.
    pub fn at(&self, x: f32, y: f32) -> (f32, f32) {
        let x = if self.flip { -x } else { x };
        let (s, c) = self.angle.sin_cos();
        (
            self.cx + self.scale * (x * c - y * s),
            self.cy + self.scale * (x * s + y * c),
        )
    }

    /// Canvas orientation of a local angle.
    pub fn turn(&self, a: f32) -> f32 {
        let a = if self.flip {
            std::f32::consts::PI - a
        } else {
            a
        };
        a + self.angle
    }
}

/// A canvas of `size`×`size` RGB pixels.
pub(crate) struct Canvas {
    size: usize,
    px: Vec<Rgb>,
}

impl Canvas {
    /// A canvas filled with one colour.
    pub fn new(size: usize, fill: Rgb) -> Self {
        Self {
            size,
            px: vec![fill; size * size],
        }
    }

    /// Side in pixels.
    pub fn size(&self) -> f32 {
        self.size as f32
    }

    fn blend(&mut self, x: usize, y: usize, color: Rgb, alpha: f32) {
        let p = &mut self.px[y * self.size + x];
        for c in 0..3 {
            p[c] += (color[c] - p[c]) * alpha;
        }
    }

    fn bbox(&self, x0: f32, y0: f32, x1: f32, y1: f32) -> Option<(usize, usize, usize, usize)> {
        let max = self.size as f32 - 1.0;
        let (x0, y0) = (x0.floor().max(0.0), y0.floor().max(0.0));
        let (x1, y1) = (x1.ceil().min(max), y1.ceil().min(max));
        (x0 <= x1 && y0 <= y1).then_some((x0 as usize, y0 as usize, x1 as usize, y1 as usize))
    }

    /// A vertical gradient from `top` to `bottom`.
    pub fn gradient(&mut self, top: Rgb, bottom: Rgb) {
        for y in 0..self.size {
            let t = y as f32 / (self.size.max(2) - 1) as f32;
            let row: Rgb = std::array::from_fn(|c| top[c] + (bottom[c] - top[c]) * t);
            self.px[y * self.size..(y + 1) * self.size].fill(row);
        }
    }

    /// A filled ellipse in canvas coordinates, radii `rx`, `ry`, turned by `angle`, with a
    /// one-pixel soft edge.
    #[allow(clippy::too_many_arguments)]
    pub fn ellipse(
        &mut self,
        cx: f32,
        cy: f32,
        rx: f32,
        ry: f32,
        angle: f32,
        color: Rgb,
        alpha: f32,
    ) {
        let (rx, ry) = (rx.max(0.3), ry.max(0.3));
        let r = rx.max(ry) + 1.0;
        let Some((x0, y0, x1, y1)) = self.bbox(cx - r, cy - r, cx + r, cy + r) else {
            return;
        };
        let (s, c) = angle.sin_cos();
        let edge = rx.min(ry);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                let (u, v) = (dx * c + dy * s, -dx * s + dy * c);
                let d = ((u / rx).powi(2) + (v / ry).powi(2)).sqrt();
                let cover = ((1.0 - d) * edge + 0.5).clamp(0.0, 1.0);
                if cover > 0.0 {
                    self.blend(x, y, color, cover * alpha);
                }
            }
        }
    }

    /// A capsule (a thick line with round ends) of width `w`.
    #[allow(clippy::too_many_arguments)]
    pub fn line(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, w: f32, color: Rgb, alpha: f32) {
        let h = w / 2.0;
        let Some((bx0, by0, bx1, by1)) = self.bbox(
            x0.min(x1) - h - 1.0,
            y0.min(y1) - h - 1.0,
            x0.max(x1) + h + 1.0,
            y0.max(y1) + h + 1.0,
        ) else {
            return;
        };
        let (ex, ey) = (x1 - x0, y1 - y0);
        let len2 = (ex * ex + ey * ey).max(1e-6);
        for y in by0..=by1 {
            for x in bx0..=bx1 {
                let (px, py) = (x as f32 + 0.5 - x0, y as f32 + 0.5 - y0);
                let t = ((px * ex + py * ey) / len2).clamp(0.0, 1.0);
                let (qx, qy) = (px - t * ex, py - t * ey);
                let d = (qx * qx + qy * qy).sqrt();
                let cover = (h - d + 0.5).clamp(0.0, 1.0);
                if cover > 0.0 {
                    self.blend(x, y, color, cover * alpha);
                }
            }
        }
    }

    /// A filled polygon (even-odd rule), 4× supersampled.
    pub fn polygon(&mut self, pts: &[(f32, f32)], color: Rgb, alpha: f32) {
        if pts.len() < 3 {
            return;
        }
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for &(x, y) in pts {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
        let Some((bx0, by0, bx1, by1)) = self.bbox(x0, y0, x1, y1) else {
            return;
        };
        let inside = |x: f32, y: f32| {
            let mut inside = false;
            let mut j = pts.len() - 1;
            for i in 0..pts.len() {
                let ((xi, yi), (xj, yj)) = (pts[i], pts[j]);
                if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                    inside = !inside;
                }
                j = i;
            }
            inside
        };
        for y in by0..=by1 {
            for x in bx0..=bx1 {
                let hits = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)]
                    .iter()
                    .filter(|(ox, oy)| inside(x as f32 + ox, y as f32 + oy))
                    .count();
                if hits > 0 {
                    self.blend(x, y, color, alpha * hits as f32 / 4.0);
                }
            }
        }
    }

    /// An ellipse in a pose's local coordinates.
    #[allow(clippy::too_many_arguments)]
    pub fn ellipse_at(
        &mut self,
        p: &Pose,
        x: f32,
        y: f32,
        rx: f32,
        ry: f32,
        angle: f32,
        color: Rgb,
    ) {
        let (cx, cy) = p.at(x, y);
        self.ellipse(
            cx,
            cy,
            rx * p.scale,
            ry * p.scale,
            p.turn(angle),
            color,
            1.0,
        );
    }

    /// A capsule in a pose's local coordinates.
    #[allow(clippy::too_many_arguments)]
    pub fn line_at(&mut self, p: &Pose, x0: f32, y0: f32, x1: f32, y1: f32, w: f32, color: Rgb) {
        let (a, b) = (p.at(x0, y0), p.at(x1, y1));
        self.line(a.0, a.1, b.0, b.1, (w * p.scale).max(0.6), color, 1.0);
    }

    /// A polygon in a pose's local coordinates.
    pub fn polygon_at(&mut self, p: &Pose, pts: &[(f32, f32)], color: Rgb) {
        let pts: Vec<(f32, f32)> = pts.iter().map(|&(x, y)| p.at(x, y)).collect();
        self.polygon(&pts, color, 1.0);
    }

    /// Adds Gaussian noise of standard deviation `sigma` to every channel.
    pub fn noise(&mut self, rng: &mut SplitMix64, sigma: f32) {
        for p in &mut self.px {
            for c in p.iter_mut() {
                *c += rng.normal() as f32 * sigma;
            }
        }
    }

    /// Scales contrast around mid-grey and shifts brightness.
    pub fn tone(&mut self, contrast: f32, brightness: f32) {
        for p in &mut self.px {
            for c in p.iter_mut() {
                *c = (*c - 0.5) * contrast + 0.5 + brightness;
            }
        }
    }

    /// The canvas as an 8-bit image.
    pub fn to_image(&self) -> RgbImage {
        let side = u32::try_from(self.size).unwrap_or(u32::MAX);
        RgbImage::from_fn(side, side, |x, y| {
            let p = self.px[y as usize * self.size + x as usize];
            image::Rgb(p.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8))
        })
    }
}

/// Multiplies a colour by `k`.
pub(crate) fn shade(c: Rgb, k: f32) -> Rgb {
    c.map(|v| v * k)
}

/// Mixes two colours: `t` = 0 gives `a`, 1 gives `b`.
pub(crate) fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    std::array::from_fn(|i| a[i] + (b[i] - a[i]) * t)
}

/// A colour from a palette, jittered per channel by up to `jitter`.
pub(crate) fn pick(rng: &mut SplitMix64, palette: &[Rgb], jitter: f32) -> Rgb {
    let base = palette[rng.below(palette.len())];
    base.map(|v| (v + rng.range(-jitter, jitter)).clamp(0.0, 1.0))
}
