//! Automatic mixed precision, as `torch.autocast(device, dtype)` gives it: while a guard lives, libtorch
//! runs the ops on its lower-precision list (convolutions, matrix products) in the guard's dtype and
//! keeps the others (normalisation, softmax, losses) in f32, casting their inputs on the fly; the
//! weights stay f32, so gradients and optimiser state do too. This is diffusers' `mixed_precision`
//! for training. tch binds only the CUDA half-precision switch, so the guard calls the two libtorch
//! functions that set the device and dtype (their C++ symbols in libtorch_cpu of the pinned torch).
use tch::{Device, Kind};

use crate::error::{Error, Result};

/// c10::DeviceType's and c10::ScalarType's values.
const DEVICE_TYPE_CPU: i8 = 0;
const DEVICE_TYPE_CUDA: i8 = 1;
const SCALAR_TYPE_HALF: i8 = 5;
const SCALAR_TYPE_BFLOAT16: i8 = 15;

#[allow(improper_ctypes)]
extern "C" {
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn is_autocast_enabled(device_type: i8) -> bool;
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn set_autocast_enabled(device_type: i8, enabled: bool);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn get_autocast_dtype(device_type: i8) -> i8;
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn set_autocast_dtype(device_type: i8, dtype: i8);
}

/// Autocast on one device for the current thread (libtorch keeps the state per thread), restored to
/// what it was when the guard drops.
pub struct AutocastGuard {
    device_type: i8,
    was_enabled: bool,
    previous_dtype: i8,
}

impl AutocastGuard {
    /// Turns autocast on for `device` with `dtype` (bfloat16 or float16).
    pub fn enter(device: Device, dtype: Kind) -> Result<Self> {
        let scalar_type = match dtype {
            Kind::BFloat16 => SCALAR_TYPE_BFLOAT16,
            Kind::Half => SCALAR_TYPE_HALF,
            other => return Err(Error::InvalidArgument(format!("autocast runs in bfloat16 or float16, not {other:?}"))),
        };
        let device_type = match device {
            Device::Cpu => DEVICE_TYPE_CPU,
            Device::Cuda(_) => DEVICE_TYPE_CUDA,
            other => return Err(Error::Device(format!("autocast is supported on cpu and cuda, not {other:?}"))),
        };
        // SAFETY: plain setters of libtorch's thread-local autocast state; the enum arguments are
        // c10's int8-backed DeviceType and ScalarType, passed as the C++ ABI passes an int8_t.
        unsafe {
            let guard = AutocastGuard { device_type, was_enabled: is_autocast_enabled(device_type), previous_dtype: get_autocast_dtype(device_type) };
            set_autocast_dtype(device_type, scalar_type);
            set_autocast_enabled(device_type, true);
            torch_sys::at_autocast_increment_nesting();
            Ok(guard)
        }
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // SAFETY: as in `enter`. Leaving the outermost autocast region frees the cached f16/bf16 copies
        // of the weights, as Python's `torch.autocast.__exit__` does.
        unsafe {
            if torch_sys::at_autocast_decrement_nesting() == 0 {
                torch_sys::at_autocast_clear_cache();
            }
            set_autocast_enabled(self.device_type, self.was_enabled);
            set_autocast_dtype(self.device_type, self.previous_dtype);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Tensor;

    #[test]
    fn a_matrix_product_under_the_guard_runs_in_its_dtype_and_in_f32_after_it() {
        let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        {
            let _guard = AutocastGuard::enter(Device::Cpu, Kind::BFloat16).unwrap();
            assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
            assert_eq!(a.softmax(-1, Kind::Float).kind(), Kind::Float);
        }
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
    }

    #[test]
    fn autocast_to_float32_is_refused() {
        assert!(matches!(AutocastGuard::enter(Device::Cpu, Kind::Float), Err(Error::InvalidArgument(_))));
    }
}
