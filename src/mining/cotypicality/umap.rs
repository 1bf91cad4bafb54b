//! UMAP (McInnes, Healy and Melville 2018), the projection the authors used for co-typical elements,
//! written after umap-learn's algorithm with its defaults: exact k nearest neighbours (the point is its
//! own first neighbour), smooth_knn_dist with local connectivity 1, the fuzzy union of the directed
//! memberships (set_op_mix_ratio 1), a and b fitted to min_dist and spread, a spectral initialisation
//! and umap-learn's `optimize_layout_euclidean` stochastic gradient descent with negative sampling.
//!
//! Differences from umap-learn, each a deliberate simplification:
//! - neighbours are found by brute force (umap-learn switches to approximate NN-descent above 4096
//!   points), so the graph is exact at every size and costs n² distance evaluations;
//! - the spectral initialisation is a dense eigendecomposition, used up to [`SPECTRAL_MAX_POINTS`]
//!   points of a connected graph; larger or disconnected graphs start from the random layout
//!   (uniform in [-10, 10]) where umap-learn would run a sparse eigensolver or lay out each
//!   component separately. The co-typicality miner's usual sizes (thousands of boxes times the
//!   versions) therefore start at random; on tests/umap.rs's data a random start gave the same
//!   trustworthiness as the spectral one (0.9762 and 0.9772 against 0.9758 and 0.9772, 2 and 32-d);
//! - the random stream is the library's SplitMix64 ([`crate::rng`]), so results are deterministic
//!   from the seed but not equal to umap-learn's draw for draw (the check against umap-learn is on
//!   trustworthiness, tests/umap.rs).
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// The largest graph laid out spectrally: a dense n × n eigendecomposition costs O(n³) (on 2 busy
/// cores libtorch's f64 `linalg_eigh` took 6 s at 2000 points and 117 s at 4000).
pub const SPECTRAL_MAX_POINTS: usize = 2000;

/// umap-learn's floor on sigma, as a fraction of the mean neighbour distance.
const MIN_K_DIST_SCALE: f64 = 1e-3;
/// umap-learn's tolerance on the binary search of sigma.
const SMOOTH_K_TOLERANCE: f64 = 1e-5;
const SMOOTH_K_ITERATIONS: usize = 64;
/// Gradient clipping bound of the layout optimisation.
const GRADIENT_CLIP: f32 = 4.0;
/// Distance-matrix entries computed at once in the neighbour search (64 MB of f32).
const DISTANCE_CHUNK_ENTRIES: usize = 16 << 20;

#[derive(Debug, Clone)]
pub struct UmapOptions {
    /// Neighbours per point, the point itself included (15).
    pub neighbors: usize,
    /// Output dimensions (2).
    pub components: usize,
    /// Effective minimum distance between embedded points (0.1) and the scale of the embedding (1.0).
    pub min_dist: f64,
    pub spread: f64,
    /// Optimisation epochs; None: 500 up to 10 000 points, else 200 (umap-learn's default).
    pub epochs: Option<usize>,
    /// Initial learning rate (1.0), decaying linearly to 0.
    pub learning_rate: f64,
    /// Negative samples per positive sample (5).
    pub negative_sample_rate: usize,
    /// Weight of the repulsive gradient (1.0).
    pub repulsion_strength: f64,
    pub seed: u64,
}

impl Default for UmapOptions {
    fn default() -> Self {
        UmapOptions {
            neighbors: 15,
            components: 2,
            min_dist: 0.1,
            spread: 1.0,
            epochs: None,
            learning_rate: 1.0,
            negative_sample_rate: 5,
            repulsion_strength: 1.0,
            seed: 42,
        }
    }
}

impl UmapOptions {
    fn check(&self, n: usize) -> Result<()> {
        if self.neighbors < 2 || n <= self.neighbors {
            return Err(Error::InvalidArgument(format!(
                "UMAP needs at least 2 neighbours and more points than neighbours: {} neighbours for {n} points",
                self.neighbors
            )));
        }
        if self.components == 0 {
            return Err(Error::InvalidArgument("UMAP needs at least 1 output dimension".into()));
        }
        if !(self.spread > 0.0 && self.spread.is_finite() && self.min_dist >= 0.0 && self.min_dist <= self.spread) {
            return Err(Error::InvalidArgument(format!(
                "UMAP needs 0 <= min_dist <= spread and spread > 0, got min_dist {} and spread {}",
                self.min_dist, self.spread
            )));
        }
        if self.epochs == Some(0) || !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) || !self.repulsion_strength.is_finite() {
            return Err(Error::InvalidArgument("UMAP needs at least 1 epoch and a finite, positive learning rate".into()));
        }
        Ok(())
    }

    fn epochs_for(&self, n: usize) -> usize {
        self.epochs.unwrap_or_else(|| default_epochs(n))
    }
}

fn default_epochs(n: usize) -> usize {
    if n <= 10_000 {
        500
    } else {
        200
    }
}

/// Embeds the rows of `features` (n, d) in `options.components` dimensions: (n, components), f32 on
/// the CPU. Deterministic from `options.seed`.
pub fn embed(features: &Tensor, options: &UmapOptions) -> Result<Tensor> {
    let x = checked_features(features)?;
    let n = x.size()[0] as usize;
    options.check(n)?;
    let _span = tracing::info_span!("umap", n, neighbors = options.neighbors, components = options.components).entered();
    // One span per stage, so that RUST_LOG or a subscriber (benches/umap.rs) can say where the time goes.
    let knn = tracing::info_span!("knn").in_scope(|| nearest_neighbours(&x, options.neighbors))?;
    let epochs = options.epochs_for(n);
    let graph = tracing::info_span!("fuzzy_graph").in_scope(|| fuzzy_graph(&knn, n, epochs));
    let (a, b) = find_ab_params(options.spread, options.min_dist);
    let mut rng = SplitMix64::new(options.seed);
    let mut layout = tracing::info_span!("init").in_scope(|| initial_layout(&graph, n, options.components, &mut rng))?;
    tracing::info_span!("sgd").in_scope(|| optimize_layout(&mut layout, &graph, epochs, (a as f32, b as f32), options, &mut rng));
    Ok(Tensor::from_slice(&layout.values).reshape([n as i64, options.components as i64]))
}

/// The symmetric fuzzy graph of the neighbours, pruned of the edges too weak to be sampled in `epochs`.
fn fuzzy_graph(knn: &Neighbours, n: usize, epochs: usize) -> Vec<Edge> {
    let (sigmas, rhos) = smooth_knn_dist(&knn.distances, knn.k);
    // umap-learn prunes with the default epochs when asked for 10 or fewer.
    let prune_epochs = if epochs > 10 { epochs } else { default_epochs(n) };
    prune_weak_edges(fuzzy_union(&memberships(knn, &sigmas, &rhos), n), prune_epochs)
}

/// The features as f64 on the CPU, refusing shapes and values UMAP cannot embed.
fn checked_features(features: &Tensor) -> Result<Tensor> {
    let (n, d) = features.size2().map_err(|_| Error::InvalidArgument(format!("UMAP features must be (n, d), got {:?}", features.size())))?;
    if n == 0 || d == 0 {
        return Err(Error::InvalidArgument(format!("UMAP features must be a non-empty (n, d) matrix, got ({n}, {d})")));
    }
    let x = features.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?;
    if !bool::try_from(x.f_isfinite()?.f_all()?)? {
        return Err(Error::InvalidArgument("UMAP features contain NaN or infinite values".into()));
    }
    Ok(x)
}

/// Each point's k nearest neighbours, row-major (n, k), nearest first; column 0 is the point itself
/// at distance 0, as in umap-learn.
pub(crate) struct Neighbours {
    pub indices: Vec<usize>,
    pub distances: Vec<f64>,
    pub k: usize,
}

/// Exact neighbours by brute force. Candidates come from f32 distances (a matmul) of the centred data;
/// twice as many as needed are re-ranked by their exact f64 distance, so that f32 rounding cannot
/// change the neighbours that matter. Rows are taken in chunks that bound the memory.
pub(crate) fn nearest_neighbours(x: &Tensor, k: usize) -> Result<Neighbours> {
    let (n, d) = x.size2()?;
    let centred = x.f_sub(&x.f_mean_dim(0, true, Kind::Double)?)?;
    let single = centred.f_to_kind(Kind::Float)?;
    let norms = single.f_square()?.f_sum_dim_intlist(1, false, Kind::Float)?;
    let candidates = (2 * k as i64).min(n - 1);
    let chunk = (DISTANCE_CHUNK_ENTRIES as i64 / n.max(candidates * d)).clamp(1, n);
    let mut knn = Neighbours { indices: Vec::with_capacity(n as usize * k), distances: Vec::with_capacity(n as usize * k), k };
    for start in (0..n).step_by(chunk as usize) {
        let rows = chunk.min(n - start);
        let found = candidate_neighbours(&single, &norms, start, rows, candidates)?;
        let (indices, distances) = exact_nearest(&centred, start, &found, k as i64 - 1)?;
        for (row, (indices, distances)) in indices.chunks(k - 1).zip(distances.chunks(k - 1)).enumerate() {
            knn.indices.push(start as usize + row);
            knn.distances.push(0.0);
            knn.indices.extend(indices.iter().map(|&j| j as usize));
            knn.distances.extend_from_slice(distances);
        }
    }
    Ok(knn)
}

/// The `candidates` points nearest to rows start..start+rows by f32 squared distance (from the points
/// and their squared norms), the point itself excluded: the caller places it first, as a duplicate
/// point could tie with it.
fn candidate_neighbours(single: &Tensor, norms: &Tensor, start: i64, rows: i64, candidates: i64) -> Result<Tensor> {
    let squared = single
        .f_narrow(0, start, rows)?
        .f_matmul(&single.f_transpose(0, 1)?)?
        .f_mul_scalar(-2.0)?
        .f_add(&norms.f_narrow(0, start, rows)?.f_unsqueeze(1)?)?
        .f_add(&norms.f_unsqueeze(0)?)?;
    let _ = squared.f_narrow(1, start, rows)?.f_fill_diagonal_(f64::INFINITY, false)?;
    Ok(squared.f_topk(candidates, 1, false, true)?.1)
}

/// The `keep` nearest of the candidates (rows, c) by exact f64 distance, row-major, nearest first.
fn exact_nearest(centred: &Tensor, start: i64, found: &Tensor, keep: i64) -> Result<(Vec<i64>, Vec<f64>)> {
    let (rows, candidates) = found.size2()?;
    let points = centred.f_index_select(0, &found.f_reshape([-1])?)?.f_reshape([rows, candidates, -1])?;
    let offsets = points.f_sub(&centred.f_narrow(0, start, rows)?.f_unsqueeze(1)?)?;
    let (sorted, order) = offsets.f_square()?.f_sum_dim_intlist(2, false, Kind::Double)?.f_sqrt()?.f_sort(1, false)?;
    let indices = Vec::<i64>::try_from(found.f_gather(1, &order, false)?.f_narrow(1, 0, keep)?.f_reshape([-1])?)?;
    let distances = Vec::<f64>::try_from(sorted.f_narrow(1, 0, keep)?.f_reshape([-1])?)?;
    Ok((indices, distances))
}

/// umap-learn's smooth_knn_dist with local connectivity 1 and bandwidth 1, on row-major (n, k)
/// neighbour distances whose column 0 is the point itself: rho is the distance to the nearest
/// neighbour at a non-zero distance, and sigma is found by binary search so that
/// Σ_{j≥1} exp(−max(d_j − rho, 0) / sigma) = log2(k), floored at MIN_K_DIST_SCALE times the mean
/// distance (the row's, or the whole matrix's when rho is 0).
pub(crate) fn smooth_knn_dist(distances: &[f64], k: usize) -> (Vec<f64>, Vec<f64>) {
    let target = (k as f64).log2();
    let mean_distance = distances.iter().sum::<f64>() / distances.len() as f64;
    distances
        .chunks(k)
        .map(|row| {
            let rho = row.iter().copied().find(|&d| d > 0.0).unwrap_or(0.0);
            let sigma = bandwidth_search(row, rho, target);
            let floor = MIN_K_DIST_SCALE * if rho > 0.0 { row.iter().sum::<f64>() / k as f64 } else { mean_distance };
            (sigma.max(floor), rho)
        })
        .unzip()
}

/// Binary search of sigma (from 1, doubling while unbounded above), 64 steps at most.
fn bandwidth_search(row: &[f64], rho: f64, target: f64) -> f64 {
    let (mut lo, mut hi, mut mid) = (0.0, f64::INFINITY, 1.0);
    for _ in 0..SMOOTH_K_ITERATIONS {
        let sum: f64 = row[1..].iter().map(|&d| if d - rho > 0.0 { (-(d - rho) / mid).exp() } else { 1.0 }).sum();
        if (sum - target).abs() < SMOOTH_K_TOLERANCE {
            break;
        }
        if sum > target {
            hi = mid;
            mid = (lo + hi) / 2.0;
        } else {
            lo = mid;
            mid = if hi == f64::INFINITY { mid * 2.0 } else { (lo + hi) / 2.0 };
        }
    }
    mid
}

/// A weighted edge of the fuzzy graph, from `head` to `tail`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Edge {
    pub head: usize,
    pub tail: usize,
    pub weight: f64,
}

/// The directed membership strength of each point to its neighbours (the point itself excluded).
fn memberships(knn: &Neighbours, sigmas: &[f64], rhos: &[f64]) -> Vec<Edge> {
    let mut edges = Vec::with_capacity(knn.indices.len());
    for (slot, (&tail, &d)) in knn.indices.iter().zip(&knn.distances).enumerate() {
        let head = slot / knn.k;
        if tail == head {
            continue;
        }
        let excess = d - rhos[head];
        let weight = if excess <= 0.0 || sigmas[head] == 0.0 { 1.0 } else { (-excess / sigmas[head]).exp() };
        edges.push(Edge { head, tail, weight });
    }
    edges
}

/// The fuzzy union A + Aᵀ − A∘Aᵀ of the directed memberships: a symmetric graph, its edges sorted by
/// head then tail (as scipy's COO of the CSR matrix umap-learn iterates).
pub(crate) fn fuzzy_union(directed: &[Edge], n: usize) -> Vec<Edge> {
    let mut both: Vec<Edge> = directed.iter().flat_map(|e| [*e, Edge { head: e.tail, tail: e.head, weight: e.weight }]).collect();
    both.sort_by_key(|e| e.head * n + e.tail);
    let mut union: Vec<Edge> = Vec::with_capacity(both.len());
    for edge in both {
        match union.last_mut() {
            Some(last) if (last.head, last.tail) == (edge.head, edge.tail) => last.weight = last.weight + edge.weight - last.weight * edge.weight,
            _ => union.push(edge),
        }
    }
    union.retain(|e| e.weight > 0.0);
    union
}

/// Drops the edges too weak to be sampled once in `epochs` epochs (weight below max / epochs), as
/// umap-learn does before laying out.
fn prune_weak_edges(mut graph: Vec<Edge>, epochs: usize) -> Vec<Edge> {
    let max = graph.iter().map(|e| e.weight).fold(0.0, f64::max);
    graph.retain(|e| e.weight >= max / epochs as f64);
    graph
}

/// a and b of the embedding's membership curve 1 / (1 + a d^(2b)), fitted by least squares (damped
/// Gauss–Newton, from a = b = 1 as scipy's curve_fit starts) to 1 below `min_dist` and
/// exp(−(d − min_dist) / spread) above, on 300 points in [0, 3·spread], as umap-learn's find_ab_params.
pub fn find_ab_params(spread: f64, min_dist: f64) -> (f64, f64) {
    let xs: Vec<f64> = (0..300).map(|i| 3.0 * spread * i as f64 / 299.0).collect();
    let ys: Vec<f64> = xs.iter().map(|&x| if x < min_dist { 1.0 } else { (-(x - min_dist) / spread).exp() }).collect();
    let cost = |a: f64, b: f64| xs.iter().zip(&ys).map(|(&x, &y)| (curve(x, a, b) - y).powi(2)).sum::<f64>();
    let (mut a, mut b, mut damping) = (1.0, 1.0, 1e-3);
    let mut current = cost(a, b);
    for _ in 0..200 {
        let (step_a, step_b) = damped_step(&xs, &ys, a, b, damping);
        let trial = cost(a + step_a, b + step_b);
        if trial.is_finite() && trial < current {
            let converged = current - trial < 1e-15 * current.max(1e-300);
            (a, b, current, damping) = (a + step_a, b + step_b, trial, damping / 10.0);
            if converged {
                break;
            }
        } else {
            damping *= 10.0;
            if damping > 1e12 {
                break;
            }
        }
    }
    (a, b)
}

fn curve(x: f64, a: f64, b: f64) -> f64 {
    1.0 / (1.0 + a * x.powf(2.0 * b))
}

/// One Levenberg–Marquardt step of (a, b): (JᵀJ + λ diag JᵀJ) δ = −Jᵀr.
fn damped_step(xs: &[f64], ys: &[f64], a: f64, b: f64, damping: f64) -> (f64, f64) {
    let (mut jaa, mut jab, mut jbb, mut ga, mut gb) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (&x, &y) in xs.iter().zip(ys) {
        let u = x.powf(2.0 * b);
        let denominator = (1.0 + a * u).powi(2);
        let da = -u / denominator;
        // x^(2b) ln x → 0 as x → 0.
        let db = if x > 0.0 { -2.0 * a * u * x.ln() / denominator } else { 0.0 };
        let r = curve(x, a, b) - y;
        (jaa, jab, jbb, ga, gb) = (jaa + da * da, jab + da * db, jbb + db * db, ga + da * r, gb + db * r);
    }
    let (maa, mbb) = (jaa * (1.0 + damping), jbb * (1.0 + damping));
    let det = maa * mbb - jab * jab;
    ((-ga * mbb + gb * jab) / det, (-gb * maa + ga * jab) / det)
}

/// Row-major (n, dims) coordinates of the embedding.
struct Layout {
    values: Vec<f32>,
    dims: usize,
}

/// The starting layout, each dimension rescaled to [0, 10] as umap-learn does before optimising:
/// spectral where the graph is connected and small enough, else uniform random.
fn initial_layout(graph: &[Edge], n: usize, dims: usize, rng: &mut SplitMix64) -> Result<Layout> {
    let spectral = n <= SPECTRAL_MAX_POINTS && dims < n && connected(graph, n);
    let mut values = if spectral {
        noisy_scale(spectral_coordinates(graph, n, dims)?, rng)
    } else {
        tracing::info!(n, "UMAP starts from a random layout (graph too large for the dense spectral layout, or disconnected)");
        (0..n * dims).map(|_| (rng.uniform() * 20.0 - 10.0) as f32).collect()
    };
    rescale_columns(&mut values, dims);
    Ok(Layout { values, dims })
}

fn connected(graph: &[Edge], n: usize) -> bool {
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut components = n;
    for e in graph {
        let (a, b) = (root(&mut parent, e.head), root(&mut parent, e.tail));
        if a != b {
            parent[a] = b;
            components -= 1;
        }
    }
    components == 1
}

/// The eigenvectors of the symmetric normalised Laplacian I − D^(−1/2) W D^(−1/2) with the smallest
/// eigenvalues after the trivial one, as row-major (n, dims). Each vector's sign is fixed so that its
/// entry of largest magnitude is positive (eigensolvers leave it arbitrary).
fn spectral_coordinates(graph: &[Edge], n: usize, dims: usize) -> Result<Vec<f64>> {
    let mut degree = vec![0.0; n];
    for e in graph {
        degree[e.head] += e.weight;
    }
    let mut laplacian = vec![0.0; n * n];
    (0..n).for_each(|i| laplacian[i * n + i] = 1.0);
    for e in graph {
        laplacian[e.head * n + e.tail] -= e.weight / (degree[e.head] * degree[e.tail]).sqrt();
    }
    let (_, vectors) = Tensor::from_slice(&laplacian).f_reshape([n as i64, n as i64])?.f_linalg_eigh("L")?;
    let chosen = vectors.f_narrow(1, 1, dims as i64)?;
    let largest = chosen.f_abs()?.f_argmax(0, true)?;
    let signs = chosen.f_gather(0, &largest, false)?.f_sign()?;
    Ok(Vec::<f64>::try_from(chosen.f_mul(&signs)?.f_contiguous()?.f_reshape([-1])?)?)
}

/// umap-learn's noisy_scale_coords: scaled so the largest magnitude is 10, plus normal noise of
/// standard deviation 1e-4 that keeps points of equal coordinates apart.
fn noisy_scale(coordinates: Vec<f64>, rng: &mut SplitMix64) -> Vec<f32> {
    let largest = coordinates.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let expansion = if largest > 0.0 { 10.0 / largest } else { 1.0 };
    coordinates.iter().map(|v| (v * expansion) as f32 + (1e-4 * rng.normal()) as f32).collect()
}

fn rescale_columns(values: &mut [f32], dims: usize) {
    for d in 0..dims {
        let column = values.iter().skip(d).step_by(dims);
        let (min, max) = column.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let range = if max > min { max - min } else { 1.0 };
        values.iter_mut().skip(d).step_by(dims).for_each(|v| *v = 10.0 * (*v - min) / range);
    }
}

/// umap-learn's optimize_layout_euclidean: each epoch, every edge due for sampling (every max_w / w
/// epochs) pulls its two ends together and pushes its head away from `negative_sample_rate` random
/// points per sample; gradients are clipped to ±4 per coordinate and the learning rate decays
/// linearly from `learning_rate` to 0.
fn optimize_layout(layout: &mut Layout, graph: &[Edge], epochs: usize, (a, b): (f32, f32), options: &UmapOptions, rng: &mut SplitMix64) {
    let n = (layout.values.len() / layout.dims) as u64;
    let max = graph.iter().map(|e| e.weight).fold(0.0, f64::max);
    let per_sample: Vec<f64> = graph.iter().map(|e| max / e.weight).collect();
    let per_negative: Vec<f64> = per_sample.iter().map(|p| p / options.negative_sample_rate as f64).collect();
    let mut next_sample = per_sample.clone();
    let mut next_negative = per_negative.clone();
    let gamma = options.repulsion_strength as f32;
    let mut alpha = options.learning_rate as f32;
    for epoch in 0..epochs {
        let now = epoch as f64;
        for (i, edge) in graph.iter().enumerate() {
            if next_sample[i] > now {
                continue;
            }
            attract(layout, edge.head, edge.tail, a, b, alpha);
            next_sample[i] += per_sample[i];
            let negatives = ((now - next_negative[i]) / per_negative[i]) as i64;
            for _ in 0..negatives {
                repel(layout, edge.head, rng.below(n) as usize, a, b, gamma, alpha);
            }
            next_negative[i] += negatives as f64 * per_negative[i];
        }
        // As umap-learn: the first two epochs both run at the full rate.
        alpha = options.learning_rate as f32 * (1.0 - epoch as f32 / epochs as f32);
    }
}

fn squared_distance(layout: &Layout, i: usize, j: usize) -> f32 {
    let dims = layout.dims;
    layout.values[i * dims..(i + 1) * dims].iter().zip(&layout.values[j * dims..(j + 1) * dims]).map(|(p, q)| (p - q) * (p - q)).sum()
}

/// Moves both ends of an edge along the attractive gradient of the membership curve.
fn attract(layout: &mut Layout, head: usize, tail: usize, a: f32, b: f32, alpha: f32) {
    let d2 = squared_distance(layout, head, tail);
    if d2 <= 0.0 {
        return;
    }
    let coefficient = -2.0 * a * b * d2.powf(b - 1.0) / (a * d2.powf(b) + 1.0);
    let dims = layout.dims;
    for d in 0..dims {
        let step = (coefficient * (layout.values[head * dims + d] - layout.values[tail * dims + d])).clamp(-GRADIENT_CLIP, GRADIENT_CLIP) * alpha;
        layout.values[head * dims + d] += step;
        layout.values[tail * dims + d] -= step;
    }
}

/// Moves `head` along the repulsive gradient away from a negative sample (only `head` moves).
fn repel(layout: &mut Layout, head: usize, other: usize, a: f32, b: f32, gamma: f32, alpha: f32) {
    let d2 = squared_distance(layout, head, other);
    if d2 <= 0.0 {
        return;
    }
    let coefficient = 2.0 * gamma * b / ((0.001 + d2) * (a * d2.powf(b) + 1.0));
    let dims = layout.dims;
    for d in 0..dims {
        let step = (coefficient * (layout.values[head * dims + d] - layout.values[other * dims + d])).clamp(-GRADIENT_CLIP, GRADIENT_CLIP) * alpha;
        layout.values[head * dims + d] += step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two well separated blobs of 40 points in 8 dimensions.
    fn blobs(seed: u64) -> Tensor {
        let mut rng = SplitMix64::new(seed);
        let noise = rng.normal_tensor(&[80, 8]).to_kind(Kind::Double);
        let offsets = Tensor::cat(&[Tensor::zeros([40, 8], (Kind::Double, Device::Cpu)), Tensor::full([40, 8], 10.0, (Kind::Double, Device::Cpu))], 0);
        noise + offsets
    }

    #[test]
    fn a_and_b_match_umap_learn() {
        // umap-learn 0.5.12's find_ab_params (scipy's curve_fit) for (spread, min_dist).
        for ((spread, min_dist), expected) in [((1.0, 0.1), (1.5769434602697652, 0.8950608778515733)), ((2.0, 0.5), (0.2588787412869628, 1.0574996994409025))] {
            let (a, b) = find_ab_params(spread, min_dist);
            assert!((a - expected.0).abs() < 1e-5 && (b - expected.1).abs() < 1e-5, "spread {spread}, min_dist {min_dist}: a {a}, b {b}");
        }
    }

    #[test]
    fn sigma_makes_the_memberships_sum_to_log2_k() {
        let k = 15;
        let knn = nearest_neighbours(&blobs(1), k).unwrap();
        assert!(knn.indices.chunks(k).enumerate().all(|(i, row)| row[0] == i), "each point is its own first neighbour");
        assert!(knn.distances.chunks(k).all(|row| row.windows(2).all(|w| w[0] <= w[1])), "nearest first");
        let (sigmas, rhos) = smooth_knn_dist(&knn.distances, k);
        for (row, (sigma, rho)) in knn.distances.chunks(k).zip(sigmas.iter().zip(&rhos)) {
            assert_eq!(*rho, row[1], "rho is the nearest non-self distance");
            let sum: f64 = row[1..].iter().map(|d| (-(d - rho).max(0.0) / sigma).exp()).sum();
            assert!((sum - (k as f64).log2()).abs() < 1e-4, "sum {sum}");
        }
    }

    #[test]
    fn neighbours_are_the_exact_ones() {
        let x = blobs(2);
        let knn = nearest_neighbours(&x, 5).unwrap();
        let all = x.unsqueeze(1) - x.unsqueeze(0);
        let distances = all.square().sum_dim_intlist(2, false, Kind::Double).sqrt();
        let (sorted, order) = distances.sort(1, false);
        let expected = Vec::<i64>::try_from(order.narrow(1, 1, 4).reshape([-1])).unwrap();
        let expected_d = Vec::<f64>::try_from(sorted.narrow(1, 1, 4).reshape([-1])).unwrap();
        let found: Vec<i64> = knn.indices.chunks(5).flat_map(|row| row[1..].iter().map(|&j| j as i64)).collect();
        let found_d: Vec<f64> = knn.distances.chunks(5).flat_map(|row| row[1..].to_vec()).collect();
        assert_eq!(found, expected);
        assert!(found_d.iter().zip(&expected_d).all(|(f, e)| (f - e).abs() < 1e-12));
    }

    #[test]
    fn the_fuzzy_union_is_symmetric_and_combines_both_directions() {
        let directed = [Edge { head: 0, tail: 1, weight: 0.5 }, Edge { head: 1, tail: 0, weight: 0.5 }, Edge { head: 1, tail: 2, weight: 1.0 }];
        let union = fuzzy_union(&directed, 3);
        let weight = |h, t| union.iter().find(|e| (e.head, e.tail) == (h, t)).map(|e| e.weight);
        assert_eq!((weight(0, 1), weight(1, 0)), (Some(0.75), Some(0.75)));
        assert_eq!((weight(1, 2), weight(2, 1)), (Some(1.0), Some(1.0)));
        assert_eq!(union.len(), 4);
    }

    #[test]
    fn the_embedding_is_deterministic_from_the_seed_and_separates_the_blobs() {
        let options = UmapOptions { epochs: Some(100), ..UmapOptions::default() };
        let first = embed(&blobs(3), &options).unwrap();
        assert_eq!(first.size(), [80, 2]);
        assert!(first.equal(&embed(&blobs(3), &options).unwrap()), "same seed, same embedding");
        assert!(!first.equal(&embed(&blobs(3), &UmapOptions { seed: 7, ..options }).unwrap()), "the seed matters");
        let centre = |rows: i64| first.narrow(0, rows, 40).mean_dim(0, false, Kind::Float);
        let gap = (centre(0) - centre(40)).square().sum(Kind::Float).sqrt().double_value(&[]);
        let spread = (first.narrow(0, 0, 40) - centre(0)).square().sum_dim_intlist(1, false, Kind::Float).sqrt().max().double_value(&[]);
        assert!(gap > 2.0 * spread, "blob centres {gap} apart, blob radius {spread}");
    }

    #[test]
    fn bad_inputs_are_invalid_arguments() {
        let x = blobs(4);
        let invalid = |features: &Tensor, options: UmapOptions| matches!(embed(features, &options), Err(Error::InvalidArgument(_)));
        assert!(invalid(&x.narrow(0, 0, 15), UmapOptions::default()), "n <= neighbours");
        assert!(invalid(&x, UmapOptions { components: 0, ..UmapOptions::default() }));
        assert!(invalid(&x, UmapOptions { neighbors: 1, ..UmapOptions::default() }));
        assert!(invalid(&x.narrow(1, 0, 0), UmapOptions::default()), "zero feature dimensions");
        assert!(invalid(&x.reshape([-1]), UmapOptions::default()), "not a matrix");
        let _ = x.get(3).get(2).fill_(f64::NAN);
        assert!(invalid(&x, UmapOptions::default()), "NaN features");
    }
}
