//! Clustering the patch features of a label: k-means (linfa; k-means++ initialisation, several
//! restarts, the best inertia kept), members ordered by distance to their centroid (closest first),
//! clusters ordered by the median typicality of their members (highest first).
use linfa::prelude::*;
use linfa_clustering::{KMeans, KMeansInit};
use ndarray::{Array1, Array2, Axis};
use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256Plus;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// k (32). A label with fewer patches than k gets one cluster per patch.
    pub clusters: usize,
    /// k-means++ restarts; the run of lowest inertia is kept (10; the authors ran 1).
    pub restarts: usize,
    pub seed: u64,
    pub max_iterations: u64,
    pub tolerance: f64,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions { clusters: 32, restarts: 10, seed: 10, max_iterations: 300, tolerance: 1e-4 }
    }
}

#[derive(Debug, Clone)]
pub struct Clustering {
    /// Cluster of each row.
    pub assignment: Vec<usize>,
    /// Euclidean distance of each row to its centroid.
    pub distances: Vec<f32>,
    pub centroids: Array2<f32>,
    /// Sum of squared distances to the centroids.
    pub inertia: f64,
}

/// k-means over the rows of `features` (n × d).
pub fn kmeans(features: &Array2<f32>, options: &ClusterOptions) -> Result<Clustering> {
    let n = features.nrows();
    if n == 0 {
        return Err(Error::InvalidArgument("no patches to cluster".into()));
    }
    let k = options.clusters.min(n);
    if k == 0 || options.restarts == 0 {
        return Err(Error::InvalidArgument("k-means needs at least one cluster and one run".into()));
    }
    if k < options.clusters {
        tracing::warn!(patches = n, clusters = options.clusters, "fewer patches than clusters: one cluster per patch");
    }
    let data = features.mapv(|v| v as f64);
    let dataset = DatasetBase::from(data.clone());
    let model = KMeans::params_with_rng(k, Xoshiro256Plus::seed_from_u64(options.seed))
        .n_runs(options.restarts)
        .init_method(KMeansInit::KMeansPlusPlus)
        .max_n_iterations(options.max_iterations)
        .tolerance(options.tolerance)
        .fit(&dataset)
        .map_err(|e| Error::InvalidArgument(format!("k-means failed: {e}")))?;
    let assignment: Array1<usize> = model.predict(&data);
    let centroids = model.centroids();
    let distances: Vec<f32> =
        data.axis_iter(Axis(0)).zip(assignment.iter()).map(|(row, &c)| (&row - &centroids.row(c)).mapv(|d| d * d).sum().sqrt() as f32).collect();
    let inertia = distances.iter().map(|&d| (d as f64) * (d as f64)).sum();
    Ok(Clustering { assignment: assignment.to_vec(), distances, centroids: centroids.mapv(|v| v as f32), inertia })
}

/// A cluster in rank order: its members (row indices) closest to the centroid first, and the median
/// typicality of its members.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedCluster {
    pub id: usize,
    pub members: Vec<usize>,
    pub median_typicality: f32,
}

/// Clusters ordered by the median typicality of their members, highest first (ties: lower id).
pub fn rank_clusters(clustering: &Clustering, typicality: &[f32]) -> Vec<RankedCluster> {
    let k = clustering.centroids.nrows();
    let mut clusters: Vec<RankedCluster> = (0..k)
        .map(|id| {
            let mut members: Vec<usize> = (0..clustering.assignment.len()).filter(|&i| clustering.assignment[i] == id).collect();
            members.sort_by(|&a, &b| clustering.distances[a].total_cmp(&clustering.distances[b]).then(a.cmp(&b)));
            let scores: Vec<f32> = members.iter().map(|&i| typicality[i]).collect();
            RankedCluster { id, members, median_typicality: median(&scores) }
        })
        .filter(|c| !c.members.is_empty())
        .collect();
    clusters.sort_by(|a, b| b.median_typicality.total_cmp(&a.median_typicality).then(a.id.cmp(&b.id)));
    clusters
}

/// The median as NumPy computes it (mean of the two middle values for an even count).
fn median(values: &[f32]) -> f32 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let n = sorted.len();
    match n {
        0 => f32::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs() -> Array2<f32> {
        // Three well-separated groups of 4 points.
        let centres = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)];
        let offsets = [(0.1, 0.0), (-0.1, 0.0), (0.0, 0.1), (0.0, -0.2)];
        let rows: Vec<f32> = centres.iter().flat_map(|c| offsets.iter().flat_map(move |o| [c.0 + o.0, c.1 + o.1])).collect();
        Array2::from_shape_vec((12, 2), rows).unwrap()
    }

    #[test]
    fn kmeans_finds_separated_groups_and_orders_members_by_distance() {
        let clustering = kmeans(&blobs(), &ClusterOptions { clusters: 3, ..ClusterOptions::default() }).unwrap();
        for group in 0..3 {
            let first = clustering.assignment[group * 4];
            assert!((0..4).all(|i| clustering.assignment[group * 4 + i] == first));
        }
        // Group 2's typicality is highest, so it ranks first; its farthest member (offset 0.2) is last.
        let typicality: Vec<f32> = (0..12).map(|i| (i / 4) as f32).collect();
        let ranked = rank_clusters(&clustering, &typicality);
        assert_eq!(ranked[0].median_typicality, 2.0);
        assert_eq!(*ranked[0].members.last().unwrap(), 11);
    }

    #[test]
    fn fewer_patches_than_clusters_gives_one_cluster_per_patch() {
        let clustering = kmeans(&blobs(), &ClusterOptions { clusters: 32, ..ClusterOptions::default() }).unwrap();
        assert_eq!(clustering.centroids.nrows(), 12);
        assert!(clustering.inertia < 1e-9);
    }

    #[test]
    fn median_is_numpys() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
