//! The linear SVM of discriminative mining: the C-SVM dual with its bias (the problem scikit-learn's
//! `SVC(kernel='linear')` solves through libsvm), by the same sequential minimal optimisation: the
//! working pair chosen by second-order information, kernel columns computed as matrix-vector products
//! through libtorch and kept in a bounded cache, the bias as libsvm takes it (the mean over the free
//! support vectors). Our own solver rather than linfa-svm's, because the mining loop trains thousands
//! of detectors on 10,000+ windows of 2,112 values, where the cost is the kernel columns: here a column
//! is one matrix-vector product over the rows kept as a single tensor, and only the few columns of the
//! support vectors are ever computed.
use std::collections::HashMap;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SvmOptions {
    /// The penalty of a margin violation (0.1).
    pub c: f64,
    /// Stopping tolerance on the largest violation of the optimality conditions (libsvm's 1e-3).
    pub tolerance: f64,
    /// Iterations before the solver stops with the best solution so far (libsvm's bound: 10⁷).
    pub max_iterations: usize,
}

impl Default for SvmOptions {
    fn default() -> Self {
        SvmOptions { c: 0.1, tolerance: 1e-3, max_iterations: 10_000_000 }
    }
}

/// A trained detector: decision value w·x + b.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearSvm {
    pub weights: Vec<f32>,
    pub bias: f64,
}

impl LinearSvm {
    pub fn decision(&self, x: &[f32]) -> f64 {
        self.weights.iter().zip(x).map(|(w, v)| *w as f64 * *v as f64).sum::<f64>() + self.bias
    }
}

/// Memory the kernel column cache may hold.
const CACHE_BYTES: usize = 256 << 20;
/// libsvm's floor on a non-positive curvature of the working pair.
const TAU: f64 = 1e-12;

/// Trains on the rows of `x` (n × d, f32), `positive[i]` telling row i's class.
pub fn train(x: &Tensor, positive: &[bool], options: &SvmOptions) -> Result<LinearSvm> {
    let (n, _) = x.size2()?;
    let n = n as usize;
    if n != positive.len() {
        return Err(Error::InvalidArgument(format!("{n} training rows and {} labels", positive.len())));
    }
    if !positive.contains(&true) || !positive.contains(&false) {
        return Err(Error::InvalidArgument("an SVM needs rows of both classes".into()));
    }
    if options.c.is_nan() || options.c <= 0.0 || options.tolerance.is_nan() || options.tolerance <= 0.0 {
        return Err(Error::InvalidArgument(format!("SVM penalty {} and tolerance {} must be positive", options.c, options.tolerance)));
    }
    let x = x.f_to_kind(Kind::Float)?.f_contiguous()?;
    let mut solver = Solver::new(&x, positive, options.c)?;
    solver.solve(options)?;
    let alpha_y = Tensor::from_slice(&solver.alpha.iter().zip(&solver.y).map(|(a, y)| (a * y) as f32).collect::<Vec<_>>());
    let weights = Vec::<f32>::try_from(x.f_tr()?.f_mv(&alpha_y)?)?;
    Ok(LinearSvm { weights, bias: -solver.rho() })
}

struct Solver<'a> {
    x: &'a Tensor,
    y: Vec<f64>,
    c: f64,
    alpha: Vec<f64>,
    /// Gradient of the dual objective.
    gradient: Vec<f64>,
    /// K(x_i, x_i).
    diagonal: Vec<f64>,
    columns: HashMap<usize, Vec<f32>>,
    cache_columns: usize,
}

impl<'a> Solver<'a> {
    fn new(x: &'a Tensor, positive: &[bool], c: f64) -> Result<Self> {
        let n = positive.len();
        let diagonal = Vec::<f64>::try_from(x.f_square()?.f_sum_dim_intlist(1, false, Kind::Double)?)?;
        Ok(Solver {
            x,
            y: positive.iter().map(|&p| if p { 1.0 } else { -1.0 }).collect(),
            c,
            alpha: vec![0.0; n],
            gradient: vec![-1.0; n],
            diagonal,
            columns: HashMap::new(),
            cache_columns: (CACHE_BYTES / (4 * n)).max(2),
        })
    }

    /// K(x_k, x_i) for every k.
    fn column(&mut self, i: usize) -> Result<&[f32]> {
        if !self.columns.contains_key(&i) {
            if self.columns.len() >= self.cache_columns {
                self.columns.clear();
            }
            let column = Vec::<f32>::try_from(self.x.f_mv(&self.x.f_get(i as i64)?)?)?;
            self.columns.insert(i, column);
        }
        Ok(&self.columns[&i])
    }

    fn at_upper(&self, i: usize) -> bool {
        self.alpha[i] >= self.c
    }

    fn at_lower(&self, i: usize) -> bool {
        self.alpha[i] <= 0.0
    }

    /// libsvm's working set selection 3 (second order): None when the violation is under tolerance.
    fn select(&mut self, tolerance: f64) -> Result<Option<(usize, usize)>> {
        let n = self.y.len();
        let (mut g_max, mut i) = (f64::NEG_INFINITY, None);
        for t in 0..n {
            let candidate = if self.y[t] > 0.0 { (!self.at_upper(t)).then(|| -self.gradient[t]) } else { (!self.at_lower(t)).then(|| self.gradient[t]) };
            if let Some(value) = candidate {
                if value >= g_max {
                    (g_max, i) = (value, Some(t));
                }
            }
        }
        let Some(i) = i else { return Ok(None) };
        let diagonal_i = self.diagonal[i];
        let column_i = self.column(i)?.to_vec();
        let (mut g_max2, mut j, mut best) = (f64::NEG_INFINITY, None, f64::INFINITY);
        for (t, &k_it) in column_i.iter().enumerate() {
            let (eligible, violation, gain) = if self.y[t] > 0.0 {
                (!self.at_lower(t), self.gradient[t], g_max + self.gradient[t])
            } else {
                (!self.at_upper(t), -self.gradient[t], g_max - self.gradient[t])
            };
            if !eligible {
                continue;
            }
            g_max2 = g_max2.max(violation);
            if gain > 0.0 {
                // The squared distance between the two rows, whatever their classes.
                let curvature = diagonal_i + self.diagonal[t] - 2.0 * k_it as f64;
                let objective = -(gain * gain) / if curvature > 0.0 { curvature } else { TAU };
                if objective <= best {
                    (best, j) = (objective, Some(t));
                }
            }
        }
        Ok(match j {
            Some(j) if g_max + g_max2 >= tolerance => Some((i, j)),
            _ => None,
        })
    }

    fn solve(&mut self, options: &SvmOptions) -> Result<()> {
        for _ in 0..options.max_iterations {
            let Some((i, j)) = self.select(options.tolerance)? else { return Ok(()) };
            self.update(i, j)?;
        }
        tracing::warn!(iterations = options.max_iterations, "the SVM solver stopped at its iteration bound before converging");
        Ok(())
    }

    /// Optimises the pair (i, j) analytically, clipped to the box [0, C], and updates the gradient.
    fn update(&mut self, i: usize, j: usize) -> Result<()> {
        let (y_i, y_j, c) = (self.y[i], self.y[j], self.c);
        let k_ij = self.column(i)?[j] as f64;
        let q_ij = y_i * y_j * k_ij;
        let (old_i, old_j) = (self.alpha[i], self.alpha[j]);
        let (mut a_i, mut a_j) = (old_i, old_j);
        if y_i != y_j {
            let curvature = positive_or_tau(self.diagonal[i] + self.diagonal[j] + 2.0 * q_ij);
            let delta = (-self.gradient[i] - self.gradient[j]) / curvature;
            let diff = a_i - a_j;
            a_i += delta;
            a_j += delta;
            if diff > 0.0 {
                if a_j < 0.0 {
                    (a_j, a_i) = (0.0, diff);
                }
            } else if a_i < 0.0 {
                (a_i, a_j) = (0.0, -diff);
            }
            if diff > 0.0 {
                if a_i > c {
                    (a_i, a_j) = (c, c - diff);
                }
            } else if a_j > c {
                (a_j, a_i) = (c, c + diff);
            }
        } else {
            let curvature = positive_or_tau(self.diagonal[i] + self.diagonal[j] - 2.0 * q_ij);
            let delta = (self.gradient[i] - self.gradient[j]) / curvature;
            let sum = a_i + a_j;
            a_i -= delta;
            a_j += delta;
            if sum > c {
                if a_i > c {
                    (a_i, a_j) = (c, sum - c);
                }
            } else if a_j < 0.0 {
                (a_j, a_i) = (0.0, sum);
            }
            if sum > c {
                if a_j > c {
                    (a_j, a_i) = (c, sum - c);
                }
            } else if a_i < 0.0 {
                (a_i, a_j) = (0.0, sum);
            }
        }
        (self.alpha[i], self.alpha[j]) = (a_i, a_j);
        let (change_i, change_j) = (a_i - old_i, a_j - old_j);
        let column_i = self.column(i)?.to_vec();
        let column_j = self.column(j)?.to_vec();
        for (k, g) in self.gradient.iter_mut().enumerate() {
            let y_k = self.y[k];
            *g += y_k * (y_i * column_i[k] as f64 * change_i + y_j * column_j[k] as f64 * change_j);
        }
        Ok(())
    }

    /// The offset ρ (decision = w·x − ρ): the mean of y·gradient over the free support vectors, or
    /// the middle of its feasible interval when none is free.
    fn rho(&self) -> f64 {
        let (mut upper, mut lower, mut free_sum, mut free) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0usize);
        for i in 0..self.y.len() {
            let yg = self.y[i] * self.gradient[i];
            let bounds_from_above = (self.at_upper(i) && self.y[i] < 0.0) || (self.at_lower(i) && self.y[i] > 0.0);
            if self.at_upper(i) || self.at_lower(i) {
                if bounds_from_above {
                    upper = upper.min(yg);
                } else {
                    lower = lower.max(yg);
                }
            } else {
                free += 1;
                free_sum += yg;
            }
        }
        if free > 0 {
            free_sum / free as f64
        } else {
            (upper + lower) / 2.0
        }
    }
}

fn positive_or_tau(curvature: f64) -> f64 {
    if curvature > 0.0 {
        curvature
    } else {
        TAU
    }
}
