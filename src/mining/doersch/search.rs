//! Dense search: the score of every detector on every window of a set of images, as matrix products
//! through libtorch (in bfloat16 or float32), reduced to each detector's best window per image.
use tch::{Kind, Tensor};

use super::features::{WindowGrid, FEATURE_DIM};
use crate::error::Result;

/// The windows of one image: their grid and features (windows × [`FEATURE_DIM`], in the search's
/// precision).
pub struct ImageWindows {
    pub grid: WindowGrid,
    pub features: Tensor,
}

/// A detector's best window in one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub image: usize,
    pub window: usize,
    pub score: f32,
}

/// Detectors per matrix product: bounds the score matrix of an image (windows × this many).
const DETECTORS_PER_PRODUCT: i64 = 4096;

/// For each detector (a row of `detectors`, K × [`FEATURE_DIM`]), its best window in each image of
/// `images` (indices into `windows`), optionally among the windows `allowed[image]` marks:
/// K lists, one detection per image, in the order of `images`. `step` is called after each image and
/// stops the search when it returns an error.
pub fn best_windows(
    windows: &[&ImageWindows],
    images: &[usize],
    detectors: &Tensor,
    allowed: Option<&dyn Fn(usize) -> Tensor>,
    step: &mut dyn FnMut() -> crate::error::Result<()>,
) -> Result<Vec<Vec<Detection>>> {
    let (k, dim) = detectors.size2()?;
    debug_assert_eq!(dim as usize, FEATURE_DIM);
    let mut out: Vec<Vec<Detection>> = (0..k).map(|_| Vec::with_capacity(images.len())).collect();
    let Some(first) = images.first() else { return Ok(out) };
    let kind = windows[*first].features.kind();
    let transposed = detectors.f_to_kind(kind)?.f_tr()?.f_contiguous()?;
    for &image in images {
        let features = &windows[image].features;
        let mask = allowed.map(|f| f(image));
        for start in (0..k).step_by(DETECTORS_PER_PRODUCT as usize) {
            let count = DETECTORS_PER_PRODUCT.min(k - start);
            let mut scores = features.f_mm(&transposed.f_narrow(1, start, count)?)?.f_to_kind(Kind::Float)?;
            if let Some(mask) = &mask {
                scores = scores.f_masked_fill(&mask.f_logical_not()?.f_unsqueeze(1)?, f64::NEG_INFINITY)?;
            }
            let (values, indices) = scores.f_max_dim(0, false)?;
            let values = Vec::<f32>::try_from(values)?;
            let indices = Vec::<i64>::try_from(indices)?;
            for (offset, (score, window)) in values.into_iter().zip(indices).enumerate() {
                out[start as usize + offset].push(Detection { image, window: window as usize, score });
            }
        }
        step()?;
    }
    Ok(out)
}

/// The `n` best detections of a list, best first (ties: the lower image index).
pub fn top(mut detections: Vec<Detection>, n: usize) -> Vec<Detection> {
    detections.retain(|d| d.score.is_finite());
    detections.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.image.cmp(&b.image)));
    detections.truncate(n);
    detections
}
