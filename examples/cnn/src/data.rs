//! Procedurally drawn digits: the training data, the held-out set and the load generator's
//! images all come from here, so nothing is downloaded and the input distribution can be
//! shifted on purpose (brightness, rotation, noise) to show drift.
//!
//! A digit is a seven-segment glyph with per-sample jitter (segment ends, stroke width,
//! scale, offset, slant, rotation), rendered anti-aliased into 28×28 grayscale in [0, 1].

use serde::{Deserialize, Serialize};

/// Side of the square images, in pixels.
pub const IMAGE_SIDE: usize = 28;
/// Pixels per image.
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Number of classes (digits 0–9).
pub const CLASSES: usize = 10;

/// Random rotation around the distribution's mean rotation, in degrees, always applied.
const ROTATION_JITTER_DEG: f32 = 10.0;

/// Parameters of the image distribution; the defaults are the "clean" distribution the first
/// model is trained on. A drift scenario moves them; a retrain can be told to match.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataParams {
    /// Added to every pixel before clamping to [0, 1]: -0.6 dims the strokes to 0.4 on the
    /// black background; 0.5 turns the background mid-grey.
    pub brightness: f32,
    /// Mean rotation in degrees (each image adds ±10° of jitter).
    pub rotation: f32,
    /// Standard deviation of the Gaussian pixel noise.
    pub noise: f32,
}

impl Default for DataParams {
    fn default() -> Self {
        Self { brightness: 0.0, rotation: 0.0, noise: 0.1 }
    }
}

impl DataParams {
    /// The drifted distribution the demo switches to: dimmer, rotated and noisier images.
    /// Dimming (not brightening) is what lowers a CNN's confidence: brighter inputs make
    /// larger activations and, measured here, keep the old model confidently wrong.
    pub fn demo_drift() -> Self {
        Self { brightness: -0.6, rotation: 40.0, noise: 0.2 }
    }
}

/// SplitMix64: a tiny, fast, seedable generator, so a data set is a pure function of its seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.unit().max(1e-7);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}

/// Segment end points in glyph coordinates (x right, y down, glyph box [-0.5,0.5]×[-0.8,0.8]).
const SEGMENTS: [((f32, f32), (f32, f32)); 7] = [
    ((-0.5, -0.8), (0.5, -0.8)), // a: top
    ((0.5, -0.8), (0.5, 0.0)),   // b: upper right
    ((0.5, 0.0), (0.5, 0.8)),    // c: lower right
    ((-0.5, 0.8), (0.5, 0.8)),   // d: bottom
    ((-0.5, 0.0), (-0.5, 0.8)),  // e: lower left
    ((-0.5, -0.8), (-0.5, 0.0)), // f: upper left
    ((-0.5, 0.0), (0.5, 0.0)),   // g: middle
];

/// Which segments (a..g as bits 0..6) each digit lights.
const DIGIT_SEGMENTS: [u8; CLASSES] = [
    0b011_1111, // 0: abcdef
    0b000_0110, // 1: bc
    0b101_1011, // 2: abdeg
    0b100_1111, // 3: abcdg
    0b110_0110, // 4: bcfg
    0b110_1101, // 5: acdfg
    0b111_1101, // 6: acdefg
    0b000_0111, // 7: abc
    0b111_1111, // 8: all
    0b110_1111, // 9: abcdfg
];

fn distance_to_segment(px: f32, py: f32, (ax, ay): (f32, f32), (bx, by): (f32, f32)) -> f32 {
    let (dx, dy) = (bx - ax, by - ay);
    let len2 = dx * dx + dy * dy;
    let t =
        if len2 > 0.0 { (((px - ax) * dx + (py - ay) * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
    let (cx, cy) = (ax + t * dx - px, ay + t * dy - py);
    (cx * cx + cy * cy).sqrt()
}

/// Draws one image of `digit` (0–9) from the distribution `params` into `out` (784 pixels,
/// row-major, values in [0, 1]).
pub fn draw_digit(digit: usize, params: &DataParams, rng: &mut SplitMix64, out: &mut [f32]) {
    let mask = DIGIT_SEGMENTS[digit % CLASSES];
    let mut segments = Vec::with_capacity(7);
    for (i, &(a, b)) in SEGMENTS.iter().enumerate() {
        if mask & (1 << i) != 0 {
            let j = 0.06;
            segments.push((
                (a.0 + rng.uniform(-j, j), a.1 + rng.uniform(-j, j)),
                (b.0 + rng.uniform(-j, j), b.1 + rng.uniform(-j, j)),
            ));
        }
    }
    let half_width = rng.uniform(0.11, 0.2);
    let scale = rng.uniform(8.0, 10.5); // pixels per glyph unit
    let (ox, oy) = (rng.uniform(-2.0, 2.0), rng.uniform(-2.0, 2.0));
    let slant = rng.uniform(-0.15, 0.15);
    let angle =
        (params.rotation + rng.uniform(-ROTATION_JITTER_DEG, ROTATION_JITTER_DEG)).to_radians();
    let (sin, cos) = angle.sin_cos();
    let centre = IMAGE_SIDE as f32 / 2.0;
    for row in 0..IMAGE_SIDE {
        for col in 0..IMAGE_SIDE {
            // Pixel centre → glyph coordinates: undo offset, rotation, scale, then slant.
            let x = col as f32 + 0.5 - centre - ox;
            let y = row as f32 + 0.5 - centre - oy;
            let (rx, ry) = (cos * x + sin * y, -sin * x + cos * y);
            let (gy, gx0) = (ry / scale, rx / scale);
            let gx = gx0 + slant * gy;
            let d = segments
                .iter()
                .map(|&(a, b)| distance_to_segment(gx, gy, a, b))
                .fold(f32::INFINITY, f32::min);
            // Anti-aliased edge about one pixel wide.
            let ink = ((half_width - d) * scale + 0.5).clamp(0.0, 1.0);
            let value = ink + params.brightness + params.noise * rng.normal();
            out[row * IMAGE_SIDE + col] = value.clamp(0.0, 1.0);
        }
    }
}

/// A generated data set: images row-major (`len × 784`) and labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `len × 784` pixels.
    pub images: Vec<f32>,
    /// One label (0–9) per image.
    pub labels: Vec<u32>,
}

impl Dataset {
    /// `len` images from `params`, classes balanced and shuffled, determined by `seed`.
    pub fn generate(len: usize, params: &DataParams, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let mut labels: Vec<u32> = (0..len).map(|i| (i % CLASSES) as u32).collect();
        for i in (1..labels.len()).rev() {
            labels.swap(i, rng.below(i + 1));
        }
        let mut images = vec![0.0; len * IMAGE_PIXELS];
        for (label, image) in labels.iter().zip(images.chunks_exact_mut(IMAGE_PIXELS)) {
            draw_digit(*label as usize, params, &mut rng, image);
        }
        Self { images, labels }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_images_and_pixels_in_range() {
        let a = Dataset::generate(20, &DataParams::default(), 7);
        let b = Dataset::generate(20, &DataParams::default(), 7);
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.images, b.images);
        assert!(a.images.iter().all(|p| (0.0..=1.0).contains(p)));
        // Every class appears twice in 20 balanced samples.
        for class in 0..10 {
            assert_eq!(a.labels.iter().filter(|&&l| l == class).count(), 2);
        }
    }

    #[test]
    fn brightness_shift_raises_mean_pixel() {
        let clean = Dataset::generate(50, &DataParams::default(), 1);
        let bright =
            Dataset::generate(50, &DataParams { brightness: 0.4, ..DataParams::default() }, 1);
        let mean = |d: &Dataset| d.images.iter().sum::<f32>() / d.images.len() as f32;
        assert!(mean(&bright) > mean(&clean) + 0.25, "{} vs {}", mean(&bright), mean(&clean));
    }

    #[test]
    fn eight_has_more_ink_than_one() {
        let params = DataParams { noise: 0.0, ..DataParams::default() };
        let mut rng = SplitMix64::new(3);
        let mut one = vec![0.0; IMAGE_PIXELS];
        let mut eight = vec![0.0; IMAGE_PIXELS];
        draw_digit(1, &params, &mut rng, &mut one);
        draw_digit(8, &params, &mut rng, &mut eight);
        let ink = |v: &[f32]| v.iter().sum::<f32>();
        assert!(ink(&eight) > 2.0 * ink(&one));
        assert!(ink(&one) > 10.0);
    }
}
