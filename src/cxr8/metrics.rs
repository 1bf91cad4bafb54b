//! AUC-PR of a typicality map against an image's boxes for one disease: positives are the pixels whose centre lies inside any box, scores the map's values.
//! Two figures side by side: the standard average precision (scikit-learn's `average_precision_score`,
//! the primary figure) and the authors' curve (fixed log-spaced thresholds, trapezoid over recall).
use super::tables::BoundingBox;
use crate::error::{Error, Result};

/// The pixels of a `width` × `height` map whose centre (x + ½, y + ½) lies inside any box (each box
/// half-open: [x, x + w) × [y, y + h)), row-major.
pub fn positive_mask(boxes: &[BoundingBox], width: usize, height: usize) -> Vec<bool> {
    let mut mask = vec![false; width * height];
    for b in boxes {
        // Pixel x is inside when x + 0.5 ∈ [b.x, b.x + b.w), i.e. x ∈ [ceil(b.x - 0.5), ceil(b.x + b.w - 0.5)).
        let span = |start: f64, len: f64, limit: usize| {
            let lo = (start - 0.5).ceil().clamp(0.0, limit as f64) as usize;
            let hi = (start + len - 0.5).ceil().clamp(0.0, limit as f64) as usize;
            lo..hi.max(lo)
        };
        for y in span(b.y, b.h, height) {
            mask[y * width..(y + 1) * width][span(b.x, b.w, width)].fill(true);
        }
    }
    mask
}

/// Checks that every box is a box ([`BoundingBox::validate`]) that overlaps the `width` × `height`
/// image and reaches at most one image side beyond it (a box of a larger image, or of no image, is
/// an error in the caller's data, not a region to clip); `what` names the image in errors.
pub fn check_boxes(boxes: &[BoundingBox], width: usize, height: usize, what: &str) -> Result<()> {
    for b in boxes {
        b.validate().map_err(|problem| Error::InvalidData(format!("{what}: {problem}")))?;
        let (w, h) = (width as f64, height as f64);
        let overlaps = b.x < w && b.y < h && b.x + b.w > 0.0 && b.y + b.h > 0.0;
        let near = b.x >= -w && b.y >= -h && b.x + b.w <= 2.0 * w && b.y + b.h <= 2.0 * h;
        if !(overlaps && near) {
            let place = if overlaps { "reaches far beyond" } else { "lies outside" };
            return Err(Error::InvalidData(format!("{what}: box (x {}, y {}, w {}, h {}) {place} the {width}×{height} image", b.x, b.y, b.w, b.h)));
        }
    }
    Ok(())
}

/// Scores sorted from highest to lowest with their labels; errors on a non-finite score.
fn ranked(scores: &[f32], positives: &[bool]) -> Result<Vec<(f64, bool)>> {
    if scores.len() != positives.len() {
        return Err(Error::InvalidArgument(format!("{} scores for {} labels", scores.len(), positives.len())));
    }
    if let Some(bad) = scores.iter().find(|s| !s.is_finite()) {
        return Err(Error::InvalidArgument(format!("the map holds the non-finite value {bad}")));
    }
    let mut ranked: Vec<(f64, bool)> = scores.iter().map(|&s| s as f64).zip(positives.iter().copied()).collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(ranked)
}

/// Average precision exactly as scikit-learn's `average_precision_score` computes it:
/// Σ (Rₙ − Rₙ₋₁) Pₙ over the distinct scores from the highest down, ties counted together.
/// None when there is no positive (scikit-learn warns and has no meaningful value then).
pub fn average_precision(scores: &[f32], positives: &[bool]) -> Result<Option<f64>> {
    let ranked = ranked(scores, positives)?;
    let total = ranked.iter().filter(|r| r.1).count();
    if total == 0 {
        return Ok(None);
    }
    let (mut tp, mut ap, mut previous_recall) = (0usize, 0.0, 0.0);
    for (i, &(score, positive)) in ranked.iter().enumerate() {
        tp += positive as usize;
        let last_of_tie = ranked.get(i + 1).is_none_or(|next| next.0 != score);
        if last_of_tie {
            let recall = tp as f64 / total as f64;
            ap += (recall - previous_recall) * (tp as f64 / (i + 1) as f64);
            previous_recall = recall;
        }
    }
    Ok(Some(ap))
}

/// The authors' thresholds: 2·10^(−s) for s in linspace(2, 7, 1000), from 0.02 down to 2·10⁻⁷.
pub fn authors_thresholds() -> Vec<f64> {
    let n = 1000;
    (0..n)
        .map(|k| {
            // numpy's linspace: start + k·step, the last point exactly the stop.
            let s = if k == n - 1 { 7.0 } else { 2.0 + k as f64 * (5.0 / (n - 1) as f64) };
            2.0 * 10f64.powf(-s)
        })
        .collect()
}

/// The authors' precision–recall curve: at each threshold t of [`authors_thresholds`], the pixels
/// scoring above t are predicted positive; precision = tp / (tp + fp) (0 when none is above),
/// recall = tp / (positive pixels).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthorsCurve {
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
    /// The trapezoidal area under precision over recall (numpy's `trapz(precision, recall)`).
    pub area: f64,
}

/// None when there is no positive pixel.
pub fn authors_curve(scores: &[f32], positives: &[bool]) -> Result<Option<AuthorsCurve>> {
    let ranked = ranked(scores, positives)?;
    let total = ranked.iter().filter(|r| r.1).count();
    if total == 0 {
        return Ok(None);
    }
    // true positives among the i highest scores.
    let mut tp_prefix = Vec::with_capacity(ranked.len() + 1);
    tp_prefix.push(0usize);
    for r in &ranked {
        tp_prefix.push(tp_prefix.last().copied().unwrap_or(0) + r.1 as usize);
    }
    let (mut precision, mut recall) = (Vec::new(), Vec::new());
    for t in authors_thresholds() {
        let above = ranked.partition_point(|r| r.0 > t);
        let tp = tp_prefix[above];
        precision.push(if above > 0 { tp as f64 / above as f64 } else { 0.0 });
        recall.push(tp as f64 / total as f64);
    }
    let area = recall.windows(2).zip(precision.windows(2)).map(|(r, p)| (r[1] - r[0]) * (p[1] + p[0]) / 2.0).sum();
    Ok(Some(AuthorsCurve { precision, recall, area }))
}

/// Both AUC-PR figures of one map against one disease's boxes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct AucPr {
    pub average_precision: f64,
    pub authors_area: f64,
}

/// AUC-PR of a row-major `width` × `height` map against boxes in map pixels. None when no pixel
/// centre lies inside the boxes (a box smaller than a pixel); an error when a box lies outside.
pub fn auc_pr(map: &[f32], width: usize, height: usize, boxes: &[BoundingBox], what: &str) -> Result<Option<AucPr>> {
    if map.len() != width * height {
        return Err(Error::InvalidArgument(format!("{what}: a {width}×{height} map needs {} values, got {}", width * height, map.len())));
    }
    check_boxes(boxes, width, height, what)?;
    let positives = positive_mask(boxes, width, height);
    let (Some(ap), Some(curve)) = (average_precision(map, &positives)?, authors_curve(map, &positives)?) else { return Ok(None) };
    Ok(Some(AucPr { average_precision: ap, authors_area: curve.area }))
}

/// Mean and standard deviation (ddof 0, as numpy's default) of a set of per-image figures.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub std: f64,
}

impl Summary {
    /// None for an empty set.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        Some(Summary { n, mean, std: variance.sqrt() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_centres_decide_membership() {
        // [0.5, 2.5) × [0, 1) holds the centres 0.5, 1.5 (x) and 0.5 (y).
        let mask = positive_mask(&[BoundingBox { x: 0.5, y: 0.0, w: 2.0, h: 1.0 }], 4, 2);
        assert_eq!(mask, [true, true, false, false, false, false, false, false]);
        // Boxes reaching past the border are clipped.
        let mask = positive_mask(&[BoundingBox { x: -3.0, y: 1.2, w: 4.0, h: 9.0 }], 2, 2);
        assert_eq!(mask, [false, false, true, false]);
    }

    #[test]
    fn average_precision_of_perfect_and_tied_rankings() {
        assert_eq!(average_precision(&[0.9, 0.8, 0.1], &[true, true, false]).unwrap(), Some(1.0));
        // All tied: precision is the positive rate at full recall.
        assert_eq!(average_precision(&[0.5; 4], &[true, false, false, false]).unwrap(), Some(0.25));
        assert_eq!(average_precision(&[0.5; 2], &[false, false]).unwrap(), None);
        assert!(average_precision(&[f32::NAN], &[true]).is_err());
    }

    #[test]
    fn thresholds_span_the_papers_range() {
        let t = authors_thresholds();
        assert_eq!(t.len(), 1000);
        assert!((t[0] - 0.02).abs() < 1e-15 && (t[999] - 2e-7).abs() < 1e-20);
    }

    #[test]
    fn summary_uses_ddof_zero() {
        let s = Summary::of(&[1.0, 3.0]).unwrap();
        assert_eq!((s.n, s.mean, s.std), (2, 2.0, 1.0));
    }
}
