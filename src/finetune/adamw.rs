//! AdamW with decoupled weight decay, step for step as `torch.optim.AdamW` (no amsgrad).
//!
//! On the CPU the update is memory-bound: for SD 1.5 each parameter-sized pass reads or writes
//! 3.4 GB. Written as libtorch tensor operations, one step makes about two dozen such passes (each
//! in-place op reads and writes its tensor; the denominator is a temporary); `fused_update` does the
//! same arithmetic in one pass per element (read p, g, m, v; write p, m, v), as torch's own
//! `fused=True` kernel does. Measured on SD 1.5's UNet: 3.4–3.9 s per step as tensor operations
//! (BENCHMARKS.md has the fused figure). Tensors elsewhere (CUDA) keep the tensor operations, which
//! the GPU's bandwidth makes cheap.
use std::sync::atomic::{AtomicUsize, Ordering};

use tch::{Device, Kind, Tensor};

use super::TrainOptions;
use crate::error::Result;

pub(super) struct AdamW {
    pub(super) options: TrainOptions,
    pub(super) first_moments: Vec<Tensor>,
    pub(super) second_moments: Vec<Tensor>,
    pub(super) steps: i32,
}

impl AdamW {
    pub(super) fn new(parameters: &[Tensor], options: TrainOptions) -> Result<Self> {
        let zeros = |p: &Tensor| p.f_zeros_like();
        Ok(AdamW {
            first_moments: parameters.iter().map(zeros).collect::<std::result::Result<_, _>>()?,
            second_moments: parameters.iter().map(zeros).collect::<std::result::Result<_, _>>()?,
            options,
            steps: 0,
        })
    }

    /// Updates every parameter in place from its gradient (undefined: a parameter the loss did not
    /// reach, left as it is).
    pub(super) fn step(&mut self, parameters: &[Tensor], gradients: &[Tensor]) -> Result<()> {
        self.steps += 1;
        let coefficients = Coefficients::new(&self.options, self.steps);
        let mut fused = Vec::new();
        tch::no_grad(|| -> Result<()> {
            for (((p, g), m), v) in parameters.iter().zip(gradients).zip(&self.first_moments).zip(&self.second_moments) {
                if !g.defined() {
                    continue;
                }
                match FusedSlices::of(p, g, m, v) {
                    Some(slices) => fused.push(slices),
                    None => coefficients.update_with_tensor_ops(p, g, m, v)?,
                }
            }
            Ok(())
        })?;
        fused_update(&fused, &coefficients);
        Ok(())
    }
}

/// The step's scalars, in f32 as libtorch's f32 kernels use them.
#[derive(Debug, Clone, Copy)]
struct Coefficients {
    /// 1 − lr·weight_decay.
    decay: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    /// √(1 − β₂ᵗ).
    bias2_sqrt: f32,
    eps: f32,
    /// −lr / (1 − β₁ᵗ).
    neg_step_size: f32,
}

impl Coefficients {
    fn new(o: &TrainOptions, step: i32) -> Self {
        Coefficients {
            decay: (1.0 - o.learning_rate * o.weight_decay) as f32,
            one_minus_beta1: (1.0 - o.beta1) as f32,
            beta2: o.beta2 as f32,
            one_minus_beta2: (1.0 - o.beta2) as f32,
            bias2_sqrt: (1.0 - o.beta2.powi(step)).sqrt() as f32,
            eps: o.eps as f32,
            neg_step_size: (-o.learning_rate / (1.0 - o.beta1.powi(step))) as f32,
        }
    }

    /// One element, in torch's single-tensor order: p·(1−lr·wd); m.lerp(g, 1−β₁);
    /// v·β₂ + (1−β₂)·g·g; p + (−step)·m / (√v / √(1−β₂ᵗ) + ε).
    #[inline(always)]
    fn update(&self, p: &mut f32, g: f32, m: &mut f32, v: &mut f32) {
        let decayed = *p * self.decay;
        *m += self.one_minus_beta1 * (g - *m);
        *v = *v * self.beta2 + self.one_minus_beta2 * g * g;
        let denominator = v.sqrt() / self.bias2_sqrt + self.eps;
        *p = decayed + self.neg_step_size * *m / denominator;
    }

    /// The same update as libtorch operations, in place where libtorch allows (every temporary is a
    /// parameter-sized allocation).
    fn update_with_tensor_ops(&self, p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor) -> Result<()> {
        // In-place updates return another handle to the same storage, not needed here.
        let _ = p.shallow_clone().f_mul_scalar_(self.decay as f64)?;
        let _ = m.shallow_clone().f_lerp_(g, self.one_minus_beta1 as f64)?;
        let _ = v.shallow_clone().f_mul_scalar_(self.beta2 as f64)?.f_addcmul_(&g.f_mul_scalar(self.one_minus_beta2 as f64)?, g)?;
        let denominator = v.f_sqrt()?.f_div_scalar_(self.bias2_sqrt as f64)?.f_add_scalar_(self.eps as f64)?;
        let _ = p.shallow_clone().f_addcdiv_(&m.f_mul_scalar(self.neg_step_size as f64)?, &denominator)?;
        Ok(())
    }
}

/// A parameter, its gradient and its two moments as raw f32 memory: the fused update's operands.
struct FusedSlices {
    p: *mut f32,
    g: *const f32,
    m: *mut f32,
    v: *mut f32,
    len: usize,
}

// SAFETY: the pointers address four distinct tensor storages that the tensors in `AdamW::step`'s
// arguments and fields keep alive for the whole update; each worker thread writes a disjoint range.
unsafe impl Sync for FusedSlices {}

impl FusedSlices {
    /// Present when all four tensors are contiguous f32 CPU tensors of one size.
    fn of(p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor) -> Option<Self> {
        let eligible = |t: &Tensor| t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous() && t.numel() == p.numel();
        if ![p, g, m, v].into_iter().all(eligible) {
            return None;
        }
        Some(FusedSlices {
            p: p.data_ptr() as *mut f32,
            g: g.data_ptr() as *const f32,
            m: m.data_ptr() as *mut f32,
            v: v.data_ptr() as *mut f32,
            len: p.numel(),
        })
    }

    /// Updates elements `start..end`.
    ///
    /// SAFETY: the range lies within `len`, and no other thread touches it meanwhile.
    unsafe fn update_range(&self, start: usize, end: usize, c: &Coefficients) {
        let n = end - start;
        let p = std::slice::from_raw_parts_mut(self.p.add(start), n);
        let g = std::slice::from_raw_parts(self.g.add(start), n);
        let m = std::slice::from_raw_parts_mut(self.m.add(start), n);
        let v = std::slice::from_raw_parts_mut(self.v.add(start), n);
        for i in 0..n {
            c.update(&mut p[i], g[i], &mut m[i], &mut v[i]);
        }
    }
}

/// Elements per unit of work: large enough that handing units out costs nothing, small enough that
/// the threads finish together.
const CHUNK: usize = 1 << 18;

/// Runs the update over all `slices` on libtorch's intra-op thread count, the work cut into chunks
/// that the threads take in turn.
fn fused_update(slices: &[FusedSlices], c: &Coefficients) {
    let chunks: Vec<(usize, usize, usize)> =
        slices.iter().enumerate().flat_map(|(i, s)| (0..s.len).step_by(CHUNK).map(move |start| (i, start, (start + CHUNK).min(s.len)))).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        while let Some(&(i, start, end)) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) {
            // SAFETY: each chunk is taken by exactly one thread and lies within its slices.
            unsafe { slices[i].update_range(start, end, c) };
        }
    };
    let threads = (tch::get_num_threads().max(1) as usize).min(chunks.len().max(1));
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(work);
        }
        work();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fused_cpu_update_equals_the_tensor_operations_over_several_steps() {
        tch::manual_seed(3);
        // Shapes below, at and across the chunk size (512 × 512 is one chunk).
        let shapes = [[3i64, 7], [512, 512], [1025, 512]];
        let gradients: Vec<Tensor> = shapes.iter().map(|&s| Tensor::randn(s, (Kind::Float, Device::Cpu))).collect();
        let initial: Vec<Tensor> = shapes.iter().map(|&s| Tensor::randn(s, (Kind::Float, Device::Cpu))).collect();
        let contiguous: Vec<Tensor> = initial.iter().map(Tensor::copy).collect();
        // The same values laid out column-major: not contiguous, so `step` takes the tensor ops (its
        // moments, made `zeros_like`, share the layout).
        let strided: Vec<Tensor> = initial.iter().map(|t| t.tr().contiguous().tr()).collect();
        assert!(!strided[1].is_contiguous());
        let mut fused = AdamW::new(&contiguous, TrainOptions::default()).unwrap();
        let mut by_tensor_ops = AdamW::new(&strided, TrainOptions::default()).unwrap();
        for step in 1..=3 {
            let scaled: Vec<Tensor> = gradients.iter().map(|g| g * (step as f64)).collect();
            fused.step(&contiguous, &scaled).unwrap();
            by_tensor_ops.step(&strided, &scaled).unwrap();
        }
        for ((a, b), start) in contiguous.iter().zip(&strided).zip(&initial) {
            let difference = (a - b).abs().max().double_value(&[]);
            let moved = (a - start).abs().max().double_value(&[]);
            // Same operations in the same order; libtorch's vectorised lerp and division against
            // scalar f32 code may differ in the last bit. Each step moves a weight by about lr.
            assert!(difference <= 1e-7, "fused and tensor-op AdamW differ by {difference:.2e}");
            assert!(moved > 1e-4, "the parameters moved by only {moved:.2e}");
        }
    }

    #[test]
    fn a_parameter_without_a_gradient_is_left_as_it_is() {
        let parameters = [Tensor::ones([4], (Kind::Float, Device::Cpu))];
        let mut optimizer = AdamW::new(&parameters, TrainOptions::default()).unwrap();
        optimizer.step(&parameters, &[Tensor::new()]).unwrap();
        assert_eq!(parameters[0].sum(Kind::Float).double_value(&[]), 4.0);
    }
}
