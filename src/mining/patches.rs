//! Typical patches from a typicality map: every k × k window (stride 1) is scored by its mean, each
//! image keeps its best windows greedily, dropping windows that intersect or touch a kept one, and a
//! label keeps the best boxes over all its images. Ties go to the lowest (row, column), then the
//! lowest image key (an index, or an image's path or name).
use crate::error::{Error, Result};

/// A square window of the image: rows `y..y+size`, columns `x..x+size`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatchBox {
    pub x: usize,
    pub y: usize,
    pub size: usize,
    /// Mean typicality inside the window.
    pub score: f32,
}

impl PatchBox {
    /// True when the two boxes share a pixel or an edge or corner (no pixel of gap between them).
    pub fn intersects_or_touches(&self, other: &PatchBox) -> bool {
        let near = |a: usize, a_len: usize, b: usize, b_len: usize| a <= b + b_len && b <= a + a_len;
        near(self.x, self.size, other.x, other.size) && near(self.y, self.size, other.y, other.size)
    }
}

/// Mean of every k × k window of a row-major `height` × `width` map, stride 1: a
/// (height−k+1) × (width−k+1) row-major grid. Summed-area table in f64, so long sums stay exact enough.
pub fn pooled_scores(map: &[f32], height: usize, width: usize, k: usize) -> Result<Vec<f32>> {
    if map.len() != height * width {
        return Err(Error::InvalidArgument(format!("map holds {} values, {height} × {width} needs {}", map.len(), height * width)));
    }
    if k == 0 || k > height || k > width {
        return Err(Error::InvalidArgument(format!("patch size {k} must be between 1 and the map's smaller side ({})", height.min(width))));
    }
    let stride = width + 1;
    let mut table = vec![0f64; (height + 1) * stride];
    for y in 0..height {
        let mut row_sum = 0f64;
        for x in 0..width {
            row_sum += map[y * width + x] as f64;
            table[(y + 1) * stride + x + 1] = table[y * stride + x + 1] + row_sum;
        }
    }
    let (rows, cols) = (height - k + 1, width - k + 1);
    let area = (k * k) as f64;
    let mut scores = Vec::with_capacity(rows * cols);
    for y in 0..rows {
        for x in 0..cols {
            let sum = table[(y + k) * stride + x + k] - table[y * stride + x + k] - table[(y + k) * stride + x] + table[y * stride + x];
            scores.push((sum / area) as f32);
        }
    }
    Ok(scores)
}

/// The image's best windows, best first: greedy non-maximum suppression over the pooled scores, up to
/// `max_boxes`. A map holding NaN or an infinity is `Error::InvalidData` (it would poison every window
/// sum after it).
pub fn select_patches(map: &[f32], height: usize, width: usize, k: usize, max_boxes: usize) -> Result<Vec<PatchBox>> {
    let scores = pooled_scores(map, height, width, k)?;
    crate::finite::check_values(map, width, "the typicality map")?;
    Ok(select_from_scores(&scores, width - k + 1, k, max_boxes))
}

/// Greedy non-maximum suppression over already pooled k × k window scores (a row-major grid `cols`
/// wide), best first, up to `max_boxes`. NaN scores never win.
pub fn select_from_scores(scores: &[f32], cols: usize, k: usize, max_boxes: usize) -> Vec<PatchBox> {
    let mut available: Vec<bool> = scores.iter().map(|s| !s.is_nan()).collect();
    // Every kept box removes at least its own window, so there are never more boxes than windows.
    let mut chosen = Vec::with_capacity(max_boxes.min(scores.len()));
    while chosen.len() < max_boxes {
        // Strictly greater keeps the first maximum in row-major order: the lowest (row, column).
        let best = (0..scores.len()).filter(|&i| available[i]).fold(None, |best: Option<usize>, i| match best {
            Some(b) if scores[b] >= scores[i] => Some(b),
            _ => Some(i),
        });
        let Some(i) = best else { break };
        let patch = PatchBox { x: i % cols, y: i / cols, size: k, score: scores[i] };
        suppress_near(&mut available, cols, &patch);
        chosen.push(patch);
    }
    chosen
}

/// Marks every window that intersects or touches `patch` as unavailable: those whose corner lies
/// within `size` of the patch's corner on both axes.
fn suppress_near(available: &mut [bool], cols: usize, patch: &PatchBox) {
    let rows = available.len() / cols;
    let k = patch.size;
    for y in patch.y.saturating_sub(k)..(patch.y + k + 1).min(rows) {
        for x in patch.x.saturating_sub(k)..(patch.x + k + 1).min(cols) {
            available[y * cols + x] = false;
        }
    }
}

/// A box found in one image of a set, the image named by a key: its index in the set, or (where
/// images arrive in any order, from any number of workers) its path or name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImagePatch<I = usize> {
    pub image: I,
    pub patch: PatchBox,
}

/// The order of a label's boxes: score, highest first; ties by image key, then row, then column. A
/// total order over distinct boxes, so the best boxes of a set do not depend on the order they come in.
pub fn rank_order<I: Ord>(a: &ImagePatch<I>, b: &ImagePatch<I>) -> std::cmp::Ordering {
    b.patch.score.total_cmp(&a.patch.score).then_with(|| a.image.cmp(&b.image)).then(a.patch.y.cmp(&b.patch.y)).then(a.patch.x.cmp(&b.patch.x))
}

/// The `top` best boxes over all images, in [`rank_order`]. Associative and commutative: the top of
/// several blocks' tops is the top of all the boxes, whatever the blocks and their order.
pub fn top_patches<I: Ord>(mut patches: Vec<ImagePatch<I>>, top: usize) -> Vec<ImagePatch<I>> {
    patches.sort_by(rank_order);
    patches.truncate(top);
    patches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// The obvious algorithm, written independently: score every window by direct summation, sort all
    /// candidates (score descending, then row, then column), take each one that neither intersects
    /// nor touches a box already taken.
    fn reference_selection(map: &[f32], h: usize, w: usize, k: usize, n: usize) -> Vec<(usize, usize)> {
        let mut candidates = Vec::new();
        for y in 0..=h - k {
            for x in 0..=w - k {
                let mut sum = 0f64;
                for dy in 0..k {
                    for dx in 0..k {
                        sum += map[(y + dy) * w + x + dx] as f64;
                    }
                }
                candidates.push((sum / (k * k) as f64, y, x));
            }
        }
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut taken: Vec<(usize, usize)> = Vec::new();
        for (_, y, x) in candidates {
            let clash = taken.iter().any(|&(ty, tx)| y.abs_diff(ty) <= k && x.abs_diff(tx) <= k);
            if !clash {
                taken.push((y, x));
            }
            if taken.len() == n {
                break;
            }
        }
        taken
    }

    #[test]
    fn selection_equals_the_straightforward_reference_on_random_maps() {
        let mut rng = SplitMix64::new(3);
        for case in 0..40 {
            let (h, w) = (8 + rng.below(40) as usize, 8 + rng.below(40) as usize);
            let k = 1 + rng.below(h.min(w) as u64 / 2) as usize;
            let map: Vec<f32> = (0..h * w).map(|_| rng.normal() as f32).collect();
            let ours: Vec<(usize, usize)> = select_patches(&map, h, w, k, 5).unwrap().iter().map(|p| (p.y, p.x)).collect();
            assert_eq!(ours, reference_selection(&map, h, w, k, 5), "case {case}: {h}×{w}, k = {k}");
        }
    }

    #[test]
    fn ties_go_to_the_lowest_row_then_column() {
        let map = vec![1.0f32; 10 * 10];
        let boxes = select_patches(&map, 10, 10, 3, 2).unwrap();
        assert_eq!((boxes[0].y, boxes[0].x), (0, 0));
        // The next free window must leave a one-pixel gap: column 4.
        assert_eq!((boxes[1].y, boxes[1].x), (0, 4));
    }

    #[test]
    fn touching_boxes_are_suppressed_but_a_one_pixel_gap_is_allowed() {
        let a = PatchBox { x: 0, y: 0, size: 4, score: 0.0 };
        assert!(a.intersects_or_touches(&PatchBox { x: 4, y: 0, size: 4, score: 0.0 }));
        assert!(a.intersects_or_touches(&PatchBox { x: 4, y: 4, size: 4, score: 0.0 }));
        assert!(!a.intersects_or_touches(&PatchBox { x: 5, y: 0, size: 4, score: 0.0 }));
    }

    #[test]
    fn pooled_scores_are_window_means() {
        let map: Vec<f32> = (0..12).map(|v| v as f32).collect(); // 3 × 4
        let scores = pooled_scores(&map, 3, 4, 2).unwrap();
        assert_eq!(scores, vec![2.5, 3.5, 4.5, 6.5, 7.5, 8.5]);
    }

    #[test]
    fn a_patch_larger_than_the_map_is_an_error() {
        assert!(matches!(select_patches(&[0.0; 16], 4, 4, 5, 5), Err(Error::InvalidArgument(_))));
        assert!(matches!(select_patches(&[0.0; 15], 4, 4, 2, 5), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn top_patches_orders_by_score_then_image() {
        let p = |image, score| ImagePatch { image, patch: PatchBox { x: 0, y: 0, size: 1, score } };
        let top = top_patches(vec![p(0, 1.0), p(1, 3.0), p(2, 3.0), p(3, 2.0)], 3);
        assert_eq!(top.iter().map(|t| t.image).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn the_top_of_blocks_tops_is_the_top_of_all_in_any_order() {
        let mut rng = SplitMix64::new(5);
        // Few distinct scores, so ties by name, row and column decide often.
        let all: Vec<ImagePatch<String>> = (0..60)
            .map(|i| ImagePatch { image: format!("img{}", rng.below(7)), patch: PatchBox { x: i % 4, y: i / 4, size: 2, score: rng.below(3) as f32 } })
            .collect();
        let expected = top_patches(all.clone(), 10);
        for round in 0..5 {
            let mut shuffled = all.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let block = 1 + round * 7;
            let tops: Vec<ImagePatch<String>> = shuffled.chunks(block).flat_map(|c| top_patches(c.to_vec(), 10)).collect();
            assert_eq!(top_patches(tops, 10), expected, "blocks of {block}");
        }
    }
}
