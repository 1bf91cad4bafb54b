//! Co-typical elements (the paper's Section 5.1): an image and its translations to every other label
//! form a parallel set of versions. A box is co-typical when it stays typical in every version: its
//! score is the median, over the versions, of each version's pooled typicality map for its own label.
//! Each element is then described by the sequence of its versions' DIFT features, each projected to a
//! few dimensions and concatenated, and these sequences are clustered with the mining step's k-means.
//!
//! The projection is fitted once on the features of all versions together, so that every version
//! lands in the same coordinates: UMAP with 15 neighbours as the authors used ([`super::umap`], checked
//! against umap-learn's trustworthiness in tests/umap.rs), or principal component analysis.
use ndarray::Array2;
use tch::{Kind, Tensor};

use super::umap::{self, UmapOptions};
use crate::error::{Error, Result};
use crate::mining::patches::{pooled_scores, select_from_scores, PatchBox};

/// How each version's features are projected before they are concatenated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Projection {
    /// UMAP with umap-learn's defaults otherwise (the authors': 15 neighbours). With fewer points
    /// than that, the neighbours are cut to the points less one, as umap-learn does.
    Umap { neighbors: usize, seed: u64 },
    /// Principal components, largest variance first.
    Pca,
}

impl Default for Projection {
    fn default() -> Self {
        Projection::Umap { neighbors: 15, seed: 42 }
    }
}

impl Projection {
    /// Fits the projection on the rows of `features` (n, d) and returns their (n, dims) coordinates.
    pub fn fit_project(&self, features: &Tensor, dims: usize) -> Result<Tensor> {
        match *self {
            Projection::Pca => Pca::fit(features, dims)?.project(features),
            Projection::Umap { neighbors, seed } => {
                let n = features.size().first().copied().unwrap_or(0) as usize;
                if neighbors >= n {
                    tracing::warn!(neighbors, n, "fewer points than UMAP neighbours: using {} neighbours", n.saturating_sub(1));
                }
                let options = UmapOptions { neighbors: neighbors.min(n.saturating_sub(1)), components: dims, seed, ..UmapOptions::default() };
                umap::embed(features, &options)
            }
        }
    }
}

/// The median over the versions of their k × k pooled scores: a (height−k+1) × (width−k+1)
/// row-major grid. With an even number of versions the two middle values are averaged (numpy's median).
pub fn median_pooled_scores(maps: &[&[f32]], height: usize, width: usize, k: usize) -> Result<Vec<f32>> {
    if maps.is_empty() {
        return Err(Error::InvalidArgument("a parallel set needs at least one version".into()));
    }
    let pooled: Vec<Vec<f32>> = maps.iter().map(|map| pooled_scores(map, height, width, k)).collect::<Result<_>>()?;
    let mut column = vec![0f32; maps.len()];
    Ok((0..pooled[0].len())
        .map(|i| {
            column.iter_mut().zip(&pooled).for_each(|(c, p)| *c = p[i]);
            median(&mut column)
        })
        .collect())
}

fn median(values: &mut [f32]) -> f32 {
    values.sort_by(f32::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The parallel set's best boxes by co-typicality, best first (greedy suppression of boxes that
/// intersect or touch a chosen one, as for single images), up to `max_boxes` (5).
pub fn cotypical_patches(maps: &[&[f32]], height: usize, width: usize, k: usize, max_boxes: usize) -> Result<Vec<PatchBox>> {
    let scores = median_pooled_scores(maps, height, width, k)?;
    Ok(select_from_scores(&scores, width - k + 1, k, max_boxes))
}

/// Principal components fitted on rows of features.
pub struct Pca {
    mean: Tensor,
    /// (dims, d), orthonormal rows, largest variance first.
    components: Tensor,
}

impl Pca {
    /// Fits `dims` components on `features` (n, d). Each component's sign is fixed so that its entry
    /// of largest magnitude is positive, which makes the projection deterministic.
    pub fn fit(features: &Tensor, dims: usize) -> Result<Self> {
        let (n, d) = features.size2().map_err(|_| Error::InvalidArgument(format!("features must be (n, d), got {:?}", features.size())))?;
        if dims == 0 || dims as i64 > n.min(d) {
            return Err(Error::InvalidArgument(format!("{dims} components asked of {n} features of dimension {d} (at most {})", n.min(d))));
        }
        let x = features.f_to_kind(Kind::Double)?;
        let mean = x.f_mean_dim(0, true, Kind::Double)?;
        // torch.svd's reduced form: V is (d, min(n, d)), columns by decreasing singular value.
        let (_, _, v) = x.f_sub(&mean)?.f_svd(true, true)?;
        let components = v.f_transpose(0, 1)?.f_narrow(0, 0, dims as i64)?;
        let largest = components.f_abs()?.f_argmax(1, true)?;
        let signs = components.f_gather(1, &largest, false)?.f_sign()?;
        Ok(Pca { mean, components: components.f_mul(&signs)? })
    }

    /// Projects rows (m, d) to (m, dims).
    pub fn project(&self, features: &Tensor) -> Result<Tensor> {
        let x = features.f_to_kind(Kind::Double)?.f_sub(&self.mean)?;
        Ok(x.f_matmul(&self.components.f_transpose(0, 1)?)?)
    }
}

/// The clustering input of co-typical elements: `versions[v]` holds the (n, d) features of the n
/// elements in version v; one projection to `dims` dimensions is fitted on all of them, and element
/// i's row is its V projections concatenated in version order, (n, V·dims).
pub fn sequence_features(versions: &[Tensor], dims: usize, projection: &Projection) -> Result<Array2<f32>> {
    let first = versions.first().ok_or_else(|| Error::InvalidArgument("no versions given".into()))?;
    if versions.iter().any(|v| v.size() != first.size()) {
        return Err(Error::InvalidArgument("every version must hold the features of the same elements".into()));
    }
    let projected = projection.fit_project(&Tensor::f_cat(versions, 0)?, dims)?;
    let per_version = projected.f_split(first.size()[0], 0)?;
    let joined = Tensor::f_cat(&per_version, 1)?.f_to_kind(Kind::Float)?.f_contiguous()?;
    let (n, width) = joined.size2()?;
    let values = Vec::<f32>::try_from(&joined.f_reshape([-1])?)?;
    Array2::from_shape_vec((n as usize, width as usize), values).map_err(|e| Error::Torch(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn the_median_over_versions_keeps_what_every_version_finds_typical() {
        // 4 × 4 maps, k = 2: version 0 and 1 agree on the top-left corner; version 2 on nothing.
        let mut a = vec![0f32; 16];
        let mut b = vec![0f32; 16];
        let c = vec![0f32; 16];
        for i in [0, 1, 4, 5] {
            a[i] = 1.0;
            b[i] = 3.0;
        }
        a[15] = 8.0;
        let scores = median_pooled_scores(&[&a, &b, &c], 4, 4, 2).unwrap();
        assert_eq!(scores[0], 1.0);
        assert_eq!(scores[8], 0.0, "a peak in one version alone is not co-typical");
        let boxes = cotypical_patches(&[&a, &b, &c], 4, 4, 2, 5).unwrap();
        assert_eq!((boxes[0].x, boxes[0].y, boxes[0].score), (0, 0, 1.0));
    }

    #[test]
    fn an_even_number_of_versions_averages_the_middle_two() {
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn pca_finds_the_direction_of_largest_variance_and_projects_every_version_alike() {
        // Points along (1, 1, 0) with small noise in the third coordinate.
        let t = Tensor::from_slice(&[-2f32, -1., 0., 1., 2.]);
        let noise = Tensor::from_slice(&[0.01f32, -0.02, 0.0, 0.02, -0.01]);
        let x = Tensor::stack(&[&t, &t, &noise], 1);
        let pca = Pca::fit(&x, 1).unwrap();
        let direction = Vec::<f64>::try_from(&pca.components.reshape([-1])).unwrap();
        let s = 0.5f64.sqrt();
        assert!((direction[0] - s).abs() < 1e-3 && (direction[1] - s).abs() < 1e-3 && direction[2].abs() < 1e-2, "{direction:?}");
        let features = sequence_features(&[x.shallow_clone(), x.shallow_clone() * 2.0], 1, &Projection::Pca).unwrap();
        assert_eq!(features.shape(), [5, 2]);
        assert!(features[[4, 1]] > features[[4, 0]], "the second version's points lie farther out");
    }

    #[test]
    fn umap_projects_a_few_elements_with_fewer_neighbours() {
        let x = SplitMix64::new(5).normal_tensor(&[6, 4]);
        let features = sequence_features(&[x.shallow_clone(), x * 2.0], 2, &Projection::default()).unwrap();
        assert_eq!(features.shape(), [6, 4], "12 points embedded with 11 neighbours instead of 15");
        assert!(features.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn bad_shapes_are_invalid_arguments() {
        assert!(matches!(median_pooled_scores(&[], 4, 4, 2), Err(Error::InvalidArgument(_))));
        assert!(matches!(Pca::fit(&Tensor::zeros([3, 2], (Kind::Float, tch::Device::Cpu)), 3), Err(Error::InvalidArgument(_))));
        let a = Tensor::zeros([3, 4], (Kind::Float, tch::Device::Cpu));
        let b = Tensor::zeros([2, 4], (Kind::Float, tch::Device::Cpu));
        assert!(matches!(sequence_features(&[a, b], 1, &Projection::Pca), Err(Error::InvalidArgument(_))));
    }
}
