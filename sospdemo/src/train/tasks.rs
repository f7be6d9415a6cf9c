//! The procedural photo generators: two tasks, "flowers" and "pets", each drawing its classes
//! as simple shapes with random colour, size, rotation, mirror, position, background, clutter
//! and noise. Colours overlap between classes on purpose, so a model must learn the shapes.

use std::f32::consts::{PI, TAU};

use image::RgbImage;

use super::canvas::{mix, pick, shade, Canvas, Pose, Rgb};
use crate::model::rng::SplitMix64;

/// A classification task the bundled models are trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Five flowers seen from above (the tulip from the side).
    Flowers,
    /// Five animals.
    Pets,
}

impl Task {
    /// Every task, in the order the bundled models are trained.
    pub const ALL: [Task; 2] = [Task::Flowers, Task::Pets];

    /// Name of the task: its model directory and photo directory.
    pub fn name(self) -> &'static str {
        match self {
            Task::Flowers => "flowers",
            Task::Pets => "pets",
        }
    }

    /// Parses a task name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Class labels, in synset order.
    pub fn labels(self) -> &'static [&'static str] {
        match self {
            Task::Flowers => &["daisy", "dandelion", "rose", "sunflower", "tulip"],
            Task::Pets => &["cat", "dog", "rabbit", "fish", "bird"],
        }
    }

    /// Stable number of the task, used to separate the random streams of the tasks.
    pub(crate) fn id(self) -> u64 {
        match self {
            Task::Flowers => 1,
            Task::Pets => 2,
        }
    }

    /// Draws a `size`×`size` photo of class `class` (an index into [`labels`](Self::labels)).
    pub(crate) fn draw(self, class: usize, size: u32, rng: &mut SplitMix64) -> RgbImage {
        let mut c = Canvas::new(size as usize, [0.5; 3]);
        background(&mut c, rng);
        let s = c.size();
        match self {
            Task::Flowers => {
                foliage(&mut c, rng);
                let pose = Pose {
                    cx: s * (0.5 + rng.range(-0.1, 0.1)),
                    cy: s * (0.5 + rng.range(-0.1, 0.1)),
                    scale: s * rng.range(0.24, 0.38),
                    angle: rng.range(0.0, TAU),
                    flip: rng.chance(0.5),
                };
                match class {
                    0 => daisy(&mut c, &pose, rng),
                    1 => dandelion(&mut c, &pose, rng),
                    2 => rose(&mut c, &pose, rng),
                    3 => sunflower(&mut c, &pose, rng),
                    _ => {
                        let pose = Pose {
                            angle: rng.range(-0.4, 0.4),
                            scale: pose.scale * 0.95,
                            ..pose
                        };
                        tulip(&mut c, &pose, rng)
                    }
                }
            }
            Task::Pets => {
                clutter(&mut c, rng);
                let pose = Pose {
                    cx: s * (0.5 + rng.range(-0.1, 0.1)),
                    cy: s * (0.5 + rng.range(-0.08, 0.08)),
                    scale: s * rng.range(0.24, 0.34),
                    angle: rng.range(-0.35, 0.35),
                    flip: rng.chance(0.5),
                };
                match class {
                    0 => cat(&mut c, &pose, rng),
                    1 => dog(&mut c, &pose, rng),
                    2 => rabbit(&mut c, &pose, rng),
                    3 => fish(&mut c, &pose, rng),
                    _ => bird(&mut c, &pose, rng),
                }
            }
        }
        c.tone(rng.range(0.8, 1.2), rng.range(-0.08, 0.08));
        let sigma = rng.range(0.0, 0.05);
        c.noise(rng, sigma);
        c.to_image()
    }
}

fn any_colour(rng: &mut SplitMix64) -> Rgb {
    [
        rng.range(0.0, 1.0),
        rng.range(0.0, 1.0),
        rng.range(0.0, 1.0),
    ]
}

/// A gradient of two random colours with a few large soft blobs.
fn background(c: &mut Canvas, rng: &mut SplitMix64) {
    let top = any_colour(rng);
    let bottom = mix(top, any_colour(rng), rng.range(0.2, 0.8));
    c.gradient(top, bottom);
    let s = c.size();
    for _ in 0..rng.below(6) + 2 {
        let col = any_colour(rng);
        let (x, y) = (rng.range(0.0, s), rng.range(0.0, s));
        let (rx, ry) = (rng.range(0.1, 0.4) * s, rng.range(0.1, 0.4) * s);
        let a = rng.range(0.0, PI);
        let alpha = rng.range(0.15, 0.5);
        c.ellipse(x, y, rx, ry, a, col, alpha);
    }
}

/// Leaves and grass around a flower.
fn foliage(c: &mut Canvas, rng: &mut SplitMix64) {
    let s = c.size();
    let greens = [
        [0.2, 0.5, 0.15],
        [0.3, 0.6, 0.2],
        [0.15, 0.35, 0.1],
        [0.4, 0.55, 0.2],
    ];
    for _ in 0..rng.below(6) {
        let col = pick(rng, &greens, 0.08);
        let (x, y) = (rng.range(0.0, s), rng.range(0.0, s));
        let len = rng.range(0.08, 0.2) * s;
        c.ellipse(
            x,
            y,
            len,
            len * rng.range(0.25, 0.45),
            rng.range(0.0, PI),
            col,
            1.0,
        );
    }
    for _ in 0..rng.below(8) {
        let col = pick(rng, &greens, 0.1);
        let (x, y) = (rng.range(0.0, s), rng.range(0.0, s));
        let (dx, dy) = (rng.range(-0.1, 0.1) * s, rng.range(-0.3, -0.1) * s);
        c.line(x, y, x + dx, y + dy, rng.range(0.8, 2.0), col, 1.0);
    }
}

/// Random strokes and dots behind an animal.
fn clutter(c: &mut Canvas, rng: &mut SplitMix64) {
    let s = c.size();
    for _ in 0..rng.below(7) {
        let col = any_colour(rng);
        let (x, y) = (rng.range(0.0, s), rng.range(0.0, s));
        if rng.chance(0.5) {
            let (dx, dy) = (rng.range(-0.3, 0.3) * s, rng.range(-0.3, 0.3) * s);
            c.line(x, y, x + dx, y + dy, rng.range(1.0, 3.0), col, 1.0);
        } else {
            let r = rng.range(0.02, 0.08) * s;
            c.ellipse(x, y, r, r, 0.0, col, 1.0);
        }
    }
}

const WHITE: Rgb = [0.96, 0.96, 0.94];
const BLACK: Rgb = [0.06, 0.06, 0.06];
const PINK: Rgb = [0.95, 0.6, 0.65];

fn daisy(c: &mut Canvas, p: &Pose, rng: &mut SplitMix64) {
    let petal = pick(
        rng,
        &[
            WHITE,
            [0.98, 0.9, 0.92],
            [0.95, 0.95, 0.8],
            [0.88, 0.85, 0.98],
        ],
        0.04,
    );
    let n = 13 + rng.below(10);
    let len = rng.range(0.85, 1.0);
    let width = rng.range(0.1, 0.16);
    let phase = rng.range(0.0, TAU);
    for i in 0..n {
        let a = phase + TAU * i as f32 / n as f32 + rng.range(-0.08, 0.08);
        let r = 0.12 + len / 2.0;
        let col = shade(petal, rng.range(0.9, 1.0));
        c.ellipse_at(p, r * a.cos(), r * a.sin(), len / 2.0, width, a, col);
    }
    let centre = pick(rng, &[[0.98, 0.8, 0.1], [0.95, 0.65, 0.05]], 0.05);
    let rc = rng.range(0.18, 0.26);
    c.ellipse_at(p, 0.0, 0.0, rc, rc, 0.0, centre);
    for _ in 0..8 {
        let (a, r) = (rng.range(0.0, TAU), rng.range(0.0, rc * 0.7));
        c.ellipse_at(
            p,
            r * a.cos(),
            r * a.sin(),
            0.03,
            0.03,
            0.0,
            shade(centre, 0.8),
        );
    }
}

fn dandelion(c: &mut Canvas, p: &Pose, rng: &mut SplitMix64) {
    let base = pick(
        rng,
        &[[1.0, 0.85, 0.1], [0.98, 0.75, 0.05], [1.0, 0.92, 0.3]],
        0.05,
    );
    c.ellipse_at(p, 0.0, 0.0, 0.9, 0.9, 0.0, shade(base, 0.85));
    for (ring, (radius, count)) in [(1.0f32, 34usize), (0.78, 28), (0.56, 22), (0.34, 14)]
        .into_iter()
        .enumerate()
    {
        let count = count + rng.below(8);
        let phase = rng.range(0.0, TAU);
        for i in 0..count {
            let a = phase + TAU * i as f32 / count as f32 + rng.range(-0.05, 0.05);
            let r = radius * rng.range(0.9, 1.05);
            let col = shade(base, rng.range(0.85, 1.05) - 0.04 * ring as f32);
            let inner = (r - 0.3).max(0.0);
            c.line_at(
                p,
                inner * a.cos(),
                inner * a.sin(),
                r * a.cos(),
                r * a.sin(),
                0.07,
                col,
            );
        }
    }
    c.ellipse_at(p, 0.0, 0.0, 0.14, 0.14, 0.0, shade(base, 0.8));
}

fn rose(c: &mut Canvas, p: &Pose, rng: &mut SplitMix64) {
    let base = pick(
        rng,
        &[
            [0.8, 0.05, 0.1],
            [0.6, 0.02, 0.08],
            [0.95, 0.45, 0.6],
            [0.95, 0.9, 0.88],
            [1.0, 0.85, 0.2],
            [1.0, 0.55, 0.3],
        ],
        0.05,
    );
    if rng.chance(0.6) {
        let green = [0.2, 0.45, 0.15];
        for i in 0..5 {
            let a = TAU * i as f32 / 5.0 + rng.range(-0.2, 0.2);
            let tip = (1.15 * a.cos(), 1.15 * a.sin());
            let l = (0.4 * (a - 0.4).cos(), 0.4 * (a - 0.4).sin());
            let r = (0.4 * (a + 0.4).cos(), 0.4 * (a + 0.4).sin());
            c.polygon_at(p, &[l, tip, r], green);
        }
    }
    let mut phase = rng.range(0.0, TAU);
    for (ring, (dist, rad, count)) in [
        (0.55f32, 0.48f32, 5usize),
        (0.36, 0.36, 5),
        (0.2, 0.25, 4),
        (0.08, 0.15, 3),
    ]
    .into_iter()
    .enumerate()
    {
        let k = 1.0 - 0.12 * ring as f32;
        for i in 0..count {
            let a = phase + TAU * i as f32 / count as f32;
            let (x, y) = (dist * a.cos(), dist * a.sin());
            c.ellipse_at(p, x, y, rad + 0.03, rad + 0.03, a, shade(base, k * 0.7));
            c.ellipse_at(p, x, y, rad, rad * 0.92, a, shade(base, k));
        }
        phase += PI / count as f32;
    }
    // The tight spiral of the bud.
    let dark = shade(base, 0.45);
    let mut prev = (0.0f32, 0.0f32);
    for i in 1..30 {
        let t = i as f32 / 29.0;
        let (a, r) = (t * 3.0 * TAU, 0.03 + 0.2 * t);
        let cur = (r * a.cos(), r * a.sin());
        c.line_at(p, prev.0, prev.1, cur.0, cur.1, 0.035, dark);
        prev = cur;
    }
}

fn sunflower(c: &mut Canvas, p: &Pose, rng: &mut SplitMix64) {
    let petal = pick(
        rng,
        &[[1.0, 0.8, 0.05], [0.98, 0.65, 0.05], [1.0, 0.9, 0.25]],
        0.05,
    );
    let n = 16 + rng.below(12);
    let inner = rng.range(0.4, 0.5);
    let phase = rng.range(0.0, TAU);
    let half = PI / n as f32 * rng.range(0.8, 1.1);
    for i in 0..n {
        let a = phase + TAU * i as f32 / n as f32;
        let tip = rng.range(0.9, 1.05);
        let col = shade(petal, rng.range(0.88, 1.02));
        c.polygon_at(
            p,
            &[
                (inner * (a - half).cos(), inner * (a - half).sin()),
                (tip * a.cos(), tip * a.sin()),
                (inner * (a + half).cos(), inner * (a + half).sin()),
            ],
            col,
        );
    }
    let disk = pick(
        rng,
        &[[0.35, 0.2, 0.08], [0.25, 0.14, 0.05], [0.45, 0.28, 0.1]],
        0.04,
    );
    c.ellipse_at(p, 0.0, 0.0, inner + 0.04, inner + 0.04, 0.0, disk);
    // Seeds on a golden-angle spiral.
    let golden = PI * (3.0 - 5f32.sqrt());
    for i in 0..70 {
        let r = inner * (i as f32 / 70.0).sqrt();
        let a = i as f32 * golden;
        c.ellipse_at(
            p,
            r * a.cos(),
            r * a.sin(),
            0.025,
            0.025,
            0.0,
            shade(disk, 0.55),
        );
    }
}

fn tulip(c: &mut Canvas, p: &Pose, rng: &mut SplitMix64) {
    let green = pick(rng, &[[0.2, 0.5, 0.15], [0.3, 0.55, 0.2]], 0.05);
    c.line_at(p, 0.0, 0.2, rng.range(-0.1, 0.1), 1.8, 0.1, green);
    let side = if rng.chance(0.5) { 1.0 } else { -1.0 };
    c.ellipse_at(
        p,
        side * 0.3,
        1.0,
        0.6,
        0.14,
        side * -1.1,
        shade(green, 0.9),
    );
    let cup = pick(
        rng,
        &[
            [0.85, 0.08, 0.1],
            [1.0, 0.85, 0.15],
            [0.95, 0.5, 0.65],
            [0.55, 0.2, 0.6],
            [1.0, 0.5, 0.1],
            [0.96, 0.94, 0.9],
        ],
        0.05,
    );
    let h = rng.range(0.55, 0.7);
    let w = rng.range(0.3, 0.4);
    // Back petal, two side petals, front petal, each ending in a point.
    let petals = [
        (0.0, -0.25, w * 1.05, h, 0.0, 0.7),
        (-0.22, -0.2, w * 0.75, h * 0.95, -0.25, 0.85),
        (0.22, -0.2, w * 0.75, h * 0.95, 0.25, 0.85),
        (0.0, -0.12, w * 0.8, h * 0.9, 0.0, 1.0),
    ];
    for (x, y, rx, ry, tilt, k) in petals {
        let col = shade(cup, k);
        c.ellipse_at(p, x, y, rx, ry, tilt, col);
        let top_x = x + ry * tilt.sin();
        let top_y = y - ry * 1.35;
        c.polygon_at(
            p,
            &[
                (x - rx * 0.7, y - ry * 0.5),
                (top_x, top_y),
                (x + rx * 0.7, y - ry * 0.5),
            ],
            col,
        );
    }
}

fn fur(rng: &mut SplitMix64) -> Rgb {
    pick(
        rng,
        &[
            [0.9, 0.55, 0.2],
            [0.55, 0.55, 0.55],
            [0.12, 0.12, 0.12],
            [0.93, 0.92, 0.9],
            [0.5, 0.32, 0.18],
            [0.92, 0.82, 0.62],
            [0.75, 0.6, 0.4],
        ],
        0.05,
    )
}

/// A body behind a head, sometimes.
fn body(c: &mut Canvas, p: &Pose, rng: &mut SplitMix64, col: Rgb) {
    if rng.chance(0.5) {
        let x = rng.range(-0.3, 0.3);
        c.ellipse_at(
            p,
            x,
            1.2,
            rng.range(0.7, 0.95),
            rng.range(0.5, 0.7),
            0.0,
            shade(col, 0.92),
        );
    }
}

fn eye_pair(c: &mut Canvas, p: &Pose, y: f32, dx: f32, r: f32, iris: Rgb, slit: bool) {
    for s in [-1.0, 1.0] {
        c.ellipse_at(p, s * dx, y, r, r * 0.8, 0.0, iris);
        let (px, py) = if slit {
            (r * 0.25, r * 0.75)
        } else {
            (r * 0.55, r * 0.55)
        };
        c.ellipse_at(p, s * dx, y, px, py, 0.0, BLACK);
        c.ellipse_at(
            p,
            s * dx - r * 0.3,
            y - r * 0.3,
            r * 0.18,
            r * 0.18,
            0.0,
            WHITE,
        );
    }
}

fn cat(c: &mut Canvas, p: &Pose, rng: &mut SplitMix64) {
    let col = fur(rng);
    body(c, p, rng, col);
    let (ex, ew) = (rng.range(0.45, 0.6), rng.range(0.25, 0.35));
    let tip = rng.range(1.15, 1.35);
    for s in [-1.0f32, 1.0] {
        let ear = [
            (s * (ex - ew), -0.6),
            (s * (ex + 0.12), -tip),
            (s * (ex + ew + 0.1), -0.45),
        ];
        c.polygon_at(p, &ear, shade(col, 0.9));
        let inner = [
            (s * (ex - ew * 0.5), -0.62),
            (s * (ex + 0.1), -tip + 0.22),
            (s * (ex + ew * 0.6), -0.52),
        ];
        c.polygon_at(p, &inner, mix(col, PINK, 0.6));
    }
    c.ellipse_at(
        p,
        0.0,
        0.0,
        rng.range(0.82, 0.95),
        rng.range(0.72, 0.82),
        0.0,
        col,
    );
    if rng.chance(0.4) {
        let dark = shade(col, 0.6);
        for i in 0..3 {
            let x = (i as f32 - 1.0) * 0.18;
            c.line_at(p, x, -0.75, x * 1.2, -0.45, 0.07, dark);
        }
    }
    let iris = pick(
        rng,
        &[[0.45, 0.75, 0.2], [0.9, 0.8, 0.2], [0.35, 0.6, 0.9]],
        0.05,
    );
    eye_pair(c, p, -0.1, 0.35, 0.15, iris, true);
    c.polygon_at(p, &[(-0.1, 0.17), (0.1, 0.17), (0.0, 0.28)], PINK);
    let whisker = if col[0] > 0.7 { [0.3, 0.3, 0.3] } else { WHITE };
    for s in [-1.0f32, 1.0] {
        for k in 0..3 {
            let y = 0.25 + 0.09 * k as f32;
            c.line_at(
                p,
                s * 0.25,
                y,
                s * 1.15,
                y - 0.15 + 0.15 * k as f32,
                0.025,
                whisker,
            );
        }
    }
    c.line_at(p, 0.0, 0.28, -0.1, 0.38, 0.03, shade(col, 0.4));
    c.line_at(p, 0.0, 0.28, 0.1, 0.38, 0.03, shade(col, 0.4));
}

fn dog(c: &mut Canvas, p: &Pose, rng: &mut SplitMix64) {
    let col = fur(rng);
    body(c, p, rng, col);
    let ear_col = if rng.chance(0.5) {
        shade(col, 0.6)
    } else {
        col
    };
    c.ellipse_at(
        p,
        0.0,
        0.0,
        rng.range(0.75, 0.85),
        rng.range(0.8, 0.92),
        0.0,
        col,
    );
    let (len, wid) = (rng.range(0.45, 0.7), rng.range(0.2, 0.3));
    for s in [-1.0f32, 1.0] {
        c.ellipse_at(p, s * 0.78, -0.05 + len * 0.4, wid, len, -s * 0.25, ear_col);
    }
    let muzzle = mix(col, WHITE, rng.range(0.2, 0.6));
    c.ellipse_at(
        p,
        0.0,
        0.42,
        rng.range(0.4, 0.5),
        rng.range(0.28, 0.35),
        0.0,
        muzzle,
    );
    c.ellipse_at(p, 0.0, 0.27, 0.17, 0.12, 0.0, BLACK);
    eye_pair(c, p, -0.18, 0.32, 0.11, [0.3, 0.18, 0.08], false);
    c.line_at(p, 0.0, 0.35, 0.0, 0.5, 0.04, BLACK);
    if rng.chance(0.5) {
        c.ellipse_at(p, 0.05, 0.68, 0.12, 0.16, 0.0, [0.9, 0.35, 0.45]);
    }
}

fn rabbit(c: &mut Canvas, p: &Pose, rng: &mut SplitMix64) {
    let col = fur(rng);
    body(c, p, rng, col);
    let (len, wid) = (rng.range(0.55, 0.8), rng.range(0.15, 0.22));
    for s in [-1.0f32, 1.0] {
        let tilt = s * rng.range(0.0, 0.4);
        let (x, y) = (s * 0.28 + len * tilt.sin(), -0.2 - len * tilt.cos());
        c.ellipse_at(p, x, y, wid, len, tilt, col);
        c.ellipse_at(
            p,
            x,
            y + 0.05,
            wid * 0.5,
            len * 0.8,
            tilt,
            mix(col, PINK, 0.6),
        );
    }
    c.ellipse_at(
        p,
        0.0,
        0.15,
        rng.range(0.6, 0.7),
        rng.range(0.55, 0.62),
        0.0,
        col,
    );
    eye_pair(c, p, 0.02, 0.3, 0.1, [0.2, 0.1, 0.08], false);
    c.ellipse_at(p, 0.0, 0.38, 0.08, 0.06, 0.0, PINK);
    if rng.chance(0.5) {
        c.polygon_at(
            p,
            &[(-0.07, 0.5), (0.07, 0.5), (0.07, 0.62), (-0.07, 0.62)],
            WHITE,
        );
    }
}

fn fish(c: &mut Canvas, p: &Pose, rng: &mut SplitMix64) {
    let col = pick(
        rng,
        &[
            [1.0, 0.5, 0.1],
            [0.2, 0.4, 0.9],
            [1.0, 0.85, 0.15],
            [0.7, 0.72, 0.75],
            [0.85, 0.15, 0.15],
            [0.1, 0.6, 0.55],
            [0.55, 0.3, 0.7],
        ],
        0.05,
    );
    let fin = shade(col, 0.75);
    let h = rng.range(0.45, 0.65);
    let tail = rng.range(0.4, 0.6);
    c.polygon_at(
        p,
        &[(0.8, 0.0), (1.45, -tail), (1.3, 0.0), (1.45, tail)],
        fin,
    );
    c.polygon_at(
        p,
        &[(-0.3, -h * 0.8), (0.1, -h - 0.3), (0.45, -h * 0.7)],
        fin,
    );
    c.ellipse_at(p, 0.0, 0.0, 1.0, h, 0.0, col);
    if rng.chance(0.5) {
        let stripe = if rng.chance(0.5) {
            WHITE
        } else {
            shade(col, 0.5)
        };
        for x in [-0.2f32, 0.25] {
            let y = h * (1.0 - (x / 1.0).powi(2)).sqrt() * 0.9;
            c.line_at(p, x, -y, x, y, 0.1, stripe);
        }
    }
    c.ellipse_at(p, 0.1, 0.15, 0.22, 0.1, 0.4, fin);
    c.line_at(p, -0.45, -h * 0.6, -0.45, h * 0.6, 0.04, shade(col, 0.6));
    c.ellipse_at(p, -0.65, -0.1, 0.12, 0.12, 0.0, WHITE);
    c.ellipse_at(p, -0.67, -0.1, 0.06, 0.06, 0.0, BLACK);
}

fn bird(c: &mut Canvas, p: &Pose, rng: &mut SplitMix64) {
    let col = pick(
        rng,
        &[
            [0.85, 0.1, 0.1],
            [0.2, 0.4, 0.85],
            [1.0, 0.85, 0.15],
            [0.5, 0.35, 0.2],
            [0.55, 0.55, 0.55],
            [0.12, 0.12, 0.12],
            [0.2, 0.6, 0.3],
        ],
        0.05,
    );
    if rng.chance(0.5) {
        c.line_at(p, -1.3, 1.15, 1.3, 1.05, 0.12, [0.4, 0.27, 0.15]);
    }
    let legs = [0.85, 0.5, 0.1];
    c.line_at(p, -0.15, 0.6, -0.2, 1.1, 0.05, legs);
    c.line_at(p, 0.15, 0.6, 0.12, 1.1, 0.05, legs);
    let tail_len = rng.range(1.3, 1.6);
    c.polygon_at(
        p,
        &[(0.6, 0.0), (tail_len, -0.25), (tail_len, 0.3), (0.6, 0.35)],
        shade(col, 0.7),
    );
    c.ellipse_at(p, 0.0, 0.2, 0.75, rng.range(0.48, 0.6), -0.2, col);
    let belly = mix(col, WHITE, rng.range(0.0, 0.5));
    c.ellipse_at(p, -0.15, 0.38, 0.45, 0.28, -0.2, belly);
    c.ellipse_at(p, 0.15, 0.1, 0.5, 0.25, 0.3, shade(col, 0.7));
    let hr = rng.range(0.33, 0.42);
    c.ellipse_at(p, -0.6, -0.42, hr, hr, 0.0, col);
    let beak = pick(
        rng,
        &[[1.0, 0.6, 0.1], [0.95, 0.85, 0.2], [0.15, 0.15, 0.15]],
        0.04,
    );
    let bl = rng.range(0.3, 0.45);
    c.polygon_at(
        p,
        &[
            (-0.6 - hr * 0.8, -0.55),
            (-0.6 - hr - bl, -0.42),
            (-0.6 - hr * 0.8, -0.3),
        ],
        beak,
    );
    c.ellipse_at(p, -0.72, -0.5, 0.07, 0.07, 0.0, BLACK);
}
