//! The window features of discriminative mining: every 64 × 64 window at a stride of 8 pixels is
//! described by its HOG (31 orientation bins over 8 × 8 cells of 8 × 8 pixels, the window being one
//! L2-Hys normalised block: 1,984 values) and its Lab colour (a and b bilinearly resized to 8 × 8,
//! mapped by (v + 128) / 255: 128 values), the 2,112 values L2-normalised.
//!
//! The HOG is computed over the whole image and each window is one block of it, so that a window's
//! gradients at its border see the pixels beyond it, as scikit-image's `hog(image, orientations=31,
//! pixels_per_cell=(8, 8), cells_per_block=(8, 8), channel_axis=-1)` computes them; every step here
//! follows that function's arithmetic (the per-pixel channel of the strongest gradient, hard binning
//! of the orientation in [0°, 180°) with single-precision bin edges, cell sums in single precision,
//! block normalisation with ε = 1e-5), so the features equal it to rounding.
use crate::error::{Error, Result};

/// Side of a window in pixels, and the stride between windows.
pub const WINDOW: usize = 64;
pub const STRIDE: usize = 8;
/// HOG cell side in pixels, cells a window side, orientation bins.
const CELL: usize = 8;
const CELLS: usize = WINDOW / CELL;
const ORIENTATIONS: usize = 31;
pub const HOG_DIM: usize = CELLS * CELLS * ORIENTATIONS;
/// Side of the resized a and b channels.
const COLOUR_SIDE: usize = 8;
pub const COLOUR_DIM: usize = 2 * COLOUR_SIDE * COLOUR_SIDE;
pub const FEATURE_DIM: usize = HOG_DIM + COLOUR_DIM;

/// An 8-bit RGB image, row-major and interleaved.
#[derive(Debug, Clone, Copy)]
pub struct Rgb<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
}

impl Rgb<'_> {
    fn check(&self) -> Result<()> {
        if self.data.len() != self.width * self.height * 3 {
            return Err(Error::InvalidArgument(format!("{} bytes for a {}×{} RGB image", self.data.len(), self.width, self.height)));
        }
        if self.width < WINDOW || self.height < WINDOW {
            return Err(Error::InvalidArgument(format!("a {}×{} image holds no {WINDOW}×{WINDOW} window for discriminative mining", self.width, self.height)));
        }
        Ok(())
    }

    fn sample(&self, y: usize, x: usize, channel: usize) -> f64 {
        self.data[(y * self.width + x) * 3 + channel] as f64
    }
}

/// The grid of windows of an image: `rows` × `cols` windows, window (r, c) at pixel (8c, 8r).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowGrid {
    pub rows: usize,
    pub cols: usize,
}

impl WindowGrid {
    pub fn of(height: usize, width: usize) -> Self {
        WindowGrid { rows: (height / CELL).saturating_sub(CELLS - 1), cols: (width / CELL).saturating_sub(CELLS - 1) }
    }

    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The top-left pixel (x, y) of window `index` (row-major).
    pub fn origin(&self, index: usize) -> (usize, usize) {
        ((index % self.cols) * STRIDE, (index / self.cols) * STRIDE)
    }
}

/// The L2-normalised features of every window, row-major: `grid.len()` × [`FEATURE_DIM`].
pub fn window_features(image: Rgb) -> Result<(WindowGrid, Vec<f32>)> {
    image.check()?;
    let grid = WindowGrid::of(image.height, image.width);
    let hog = hog_blocks(image)?;
    let colour = colour_windows(image)?;
    let mut features = Vec::with_capacity(grid.len() * FEATURE_DIM);
    for w in 0..grid.len() {
        let (h, c) = (&hog[w * HOG_DIM..(w + 1) * HOG_DIM], &colour[w * COLOUR_DIM..(w + 1) * COLOUR_DIM]);
        let norm = h.iter().chain(c).map(|v| v * v).sum::<f64>().sqrt();
        features.extend(h.iter().chain(c).map(|v| (v / norm) as f32));
    }
    Ok((grid, features))
}

/// The image's HOG blocks, one per window: `grid.len()` × [`HOG_DIM`] values ordered (cell row,
/// cell column, orientation), as scikit-image's `hog(..., feature_vector=False)` holds them.
pub fn hog_blocks(image: Rgb) -> Result<Vec<f64>> {
    image.check()?;
    let (magnitude, orientation) = strongest_gradients(image);
    let histogram = cell_histograms(&magnitude, &orientation, image.height, image.width);
    let (cell_rows, cell_cols) = (image.height / CELL, image.width / CELL);
    let grid = WindowGrid::of(image.height, image.width);
    let mut blocks = Vec::with_capacity(grid.len() * HOG_DIM);
    for r in 0..grid.rows {
        for c in 0..grid.cols {
            let mut block = Vec::with_capacity(HOG_DIM);
            for cy in r..r + CELLS {
                block.extend_from_slice(&histogram[(cy * cell_cols + c) * ORIENTATIONS..(cy * cell_cols + c + CELLS) * ORIENTATIONS]);
            }
            debug_assert!(cell_rows >= r + CELLS);
            blocks.extend(l2_hys(block));
        }
    }
    Ok(blocks)
}

/// Per pixel, the gradient (central differences, zero on the border) of the channel whose gradient is
/// strongest (the first on ties), as its magnitude and its orientation in degrees in [0, 180).
fn strongest_gradients(image: Rgb) -> (Vec<f64>, Vec<f64>) {
    let (h, w) = (image.height, image.width);
    let mut magnitude = vec![0f64; h * w];
    let mut orientation = vec![0f64; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut best = (f64::NEG_INFINITY, 0f64, 0f64);
            for channel in 0..3 {
                let g_row = if y == 0 || y == h - 1 { 0.0 } else { image.sample(y + 1, x, channel) - image.sample(y - 1, x, channel) };
                let g_col = if x == 0 || x == w - 1 { 0.0 } else { image.sample(y, x + 1, channel) - image.sample(y, x - 1, channel) };
                let m = g_row.hypot(g_col);
                if m > best.0 {
                    best = (m, g_row, g_col);
                }
            }
            let (_, g_row, g_col) = best;
            magnitude[y * w + x] = g_col.hypot(g_row);
            orientation[y * w + x] = python_remainder(g_row.atan2(g_col).to_degrees(), 180.0);
        }
    }
    (magnitude, orientation)
}

/// `value % modulus` as Python (and numpy) define it for floats: the sign of the modulus.
fn python_remainder(value: f64, modulus: f64) -> f64 {
    let r = value % modulus;
    if r != 0.0 && (r < 0.0) != (modulus < 0.0) {
        r + modulus
    } else if r == 0.0 {
        0.0f64.copysign(modulus)
    } else {
        r
    }
}

/// The orientation histogram of every 8 × 8 cell (cells row-major, then bins): a pixel votes its
/// gradient magnitude into the one bin whose single-precision edges hold its orientation (none when
/// rounding puts it at or past the last edge); each bin's sum is kept in single precision, in the
/// pixels' row-major order, and divided by the cell's area.
fn cell_histograms(magnitude: &[f64], orientation: &[f64], height: usize, width: usize) -> Vec<f64> {
    let (cell_rows, cell_cols) = (height / CELL, width / CELL);
    let per_bin = (180.0f64 / ORIENTATIONS as f64) as f32;
    let edges: Vec<f64> = (0..=ORIENTATIONS).map(|i| (per_bin * i as f32) as f64).collect();
    let bin_of = |o: f64| {
        let mut bin = ((o / per_bin as f64) as usize).min(ORIENTATIONS - 1);
        while bin > 0 && o < edges[bin] {
            bin -= 1;
        }
        while bin < ORIENTATIONS && o >= edges[bin + 1] {
            bin += 1;
        }
        (bin < ORIENTATIONS && o >= edges[bin]).then_some(bin)
    };
    let mut sums = vec![0f32; cell_rows * cell_cols * ORIENTATIONS];
    for y in 0..cell_rows * CELL {
        for x in 0..cell_cols * CELL {
            if let Some(bin) = bin_of(orientation[y * width + x]) {
                let at = ((y / CELL) * cell_cols + x / CELL) * ORIENTATIONS + bin;
                sums[at] = (sums[at] as f64 + magnitude[y * width + x]) as f32;
            }
        }
    }
    sums.into_iter().map(|total| (total / (CELL * CELL) as f32) as f64).collect()
}

/// L2 normalisation, values clipped at 0.2, L2 normalisation again (ε = 1e-5 in both).
fn l2_hys(block: Vec<f64>) -> Vec<f64> {
    const EPS_SQUARED: f64 = 1e-5 * 1e-5;
    let norm = (block.iter().map(|v| v * v).sum::<f64>() + EPS_SQUARED).sqrt();
    let clipped: Vec<f64> = block.iter().map(|v| (v / norm).min(0.2)).collect();
    let norm = (clipped.iter().map(|v| v * v).sum::<f64>() + EPS_SQUARED).sqrt();
    clipped.into_iter().map(|v| v / norm).collect()
}

/// The a and b channels of every window resized to 8 × 8 (bilinear, pixel centres aligned, no
/// antialiasing: each output pixel the mean of the 2 × 2 input pixels about its centre), mapped by
/// (v + 128) / 255: `grid.len()` × [`COLOUR_DIM`] values ordered (channel, row, column).
pub fn colour_windows(image: Rgb) -> Result<Vec<f64>> {
    image.check()?;
    let (h, w) = (image.height, image.width);
    let lab: Vec<[f64; 3]> = (0..h * w).map(|i| rgb_to_lab([0, 1, 2].map(|c| image.data[i * 3 + c] as f64 / 255.0))).collect();
    let grid = WindowGrid::of(h, w);
    let scale = WINDOW / COLOUR_SIDE;
    let mut out = Vec::with_capacity(grid.len() * COLOUR_DIM);
    for index in 0..grid.len() {
        let (x0, y0) = grid.origin(index);
        for channel in [1, 2] {
            for i in 0..COLOUR_SIDE {
                for j in 0..COLOUR_SIDE {
                    let (y, x) = (y0 + i * scale + scale / 2 - 1, x0 + j * scale + scale / 2 - 1);
                    let at = |dy: usize, dx: usize| lab[(y + dy) * w + x + dx][channel];
                    let value = 0.5 * (0.5 * at(0, 0) + 0.5 * at(0, 1)) + 0.5 * (0.5 * at(1, 0) + 0.5 * at(1, 1));
                    out.push((value + 128.0) / 255.0);
                }
            }
        }
    }
    Ok(out)
}

/// CIE Lab (D65, 2° observer) of an sRGB colour in [0, 1], with scikit-image's constants.
fn rgb_to_lab(rgb: [f64; 3]) -> [f64; 3] {
    const XYZ_FROM_RGB: [[f64; 3]; 3] = [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]];
    const WHITE: [f64; 3] = [0.95047, 1.0, 1.08883];
    let linear = rgb.map(|c| if c > 0.04045 { ((c + 0.055) / 1.055).powf(2.4) } else { c / 12.92 });
    let f = |k: usize| {
        let row = XYZ_FROM_RGB[k];
        let t = (linear[0] * row[0] + linear[1] * row[1] + linear[2] * row[2]) / WHITE[k];
        if t > 0.008856 {
            t.cbrt()
        } else {
            7.787 * t + 16.0 / 116.0
        }
    };
    let (x, y, z) = (f(0), f(1), f(2));
    [116.0 * y - 16.0, 500.0 * (x - y), 200.0 * (y - z)]
}

/// Whether a window has too little contrast to seed a detector, as scikit-image's
/// `is_low_contrast(window, fraction_threshold)` decides: its grey levels' 1st to 99th percentile
/// range (linear interpolation) is under `fraction_threshold` of the float dynamic range [-1, 1].
pub fn is_low_contrast(image: Rgb, x0: usize, y0: usize, fraction_threshold: f64) -> bool {
    let mut grey = Vec::with_capacity(WINDOW * WINDOW);
    for y in y0..y0 + WINDOW {
        for x in x0..x0 + WINDOW {
            let [r, g, b] = [0, 1, 2].map(|c| image.sample(y, x, c) / 255.0);
            grey.push(r * 0.2125 + g * 0.7154 + b * 0.0721);
        }
    }
    grey.sort_by(f64::total_cmp);
    let range = percentile(&grey, 99.0) - percentile(&grey, 1.0);
    range / 2.0 < fraction_threshold
}

/// numpy's default (linear) percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let position = q / 100.0 * (sorted.len() - 1) as f64;
    let (below, fraction) = (position.floor() as usize, position - position.floor());
    let above = (below + 1).min(sorted.len() - 1);
    sorted[below] + fraction * (sorted[above] - sorted[below])
}
