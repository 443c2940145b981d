//! The `--device cpu|cuda:N` option of the subcommands that compute with tensors (train, test, infer, demo,
//! classify, devices, benchmark, swap).

use std::str::FromStr;

/// `--device`, flattened into the arguments of each subcommand that computes.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceOpt {
    /// Where tensors live: `cpu` (burn's Flex backend) or `cuda:N` (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda:N")]
    pub device: DeviceArg,
}

/// A compute device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceArg {
    /// The CPU, through burn's Flex backend.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl FromStr for DeviceArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(Self::Cuda(i)),
                _ => Err(format!(
                    "unknown device `{s}`: expected `cpu` or `cuda:N` (e.g. cuda:0)"
                )),
            },
        }
    }
}

impl std::fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// A computation written once for any burn backend, run on the backend that `--device` names.
pub trait BackendJob {
    /// What the job returns.
    type Output;

    /// Run on backend `B` and its `device`.
    fn run<B: attndet_detectors::models::DetBackend>(
        self,
        device: &B::Device,
    ) -> anyhow::Result<Self::Output>;
}

impl DeviceArg {
    /// Check the device, then run `job` on its backend: burn's Flex for `cpu`, CUDA for `cuda:N`.
    /// The one place where a device name becomes a backend type.
    pub fn run<J: BackendJob>(&self, job: J) -> anyhow::Result<J::Output> {
        self.check_usable()?;
        match self {
            Self::Cpu => job.run::<burn::backend::Flex>(&Default::default()),
            #[cfg(feature = "cuda")]
            Self::Cuda(i) => job.run::<burn::backend::Cuda>(&burn::backend::cuda::CudaDevice::new(*i)),
            #[cfg(not(feature = "cuda"))]
            Self::Cuda(_) => unreachable!("check_usable rejects CUDA without the feature"),
        }
    }

    /// Check that the device can be used by this binary; a clear bad-input error otherwise.
    pub fn check_usable(&self) -> anyhow::Result<()> {
        match self {
            Self::Cpu => Ok(()),
            #[cfg(not(feature = "cuda"))]
            Self::Cuda(_) => Err(crate::errors::bad_input(format!(
                "--device {self}: this attndet was built without CUDA support; rebuild with \
                 `cargo build --release --features cuda`"
            ))),
            #[cfg(feature = "cuda")]
            Self::Cuda(i) => {
                if cuda_usable(*i) {
                    Ok(())
                } else {
                    Err(crate::errors::bad_input(format!(
                        "--device {self}: CUDA device {i} cannot be used (no driver, libcuda.so not found, \
                         or no such device)"
                    )))
                }
            }
        }
    }
}

/// Probe a CUDA device. burn's CUDA runtime panics on first use when the driver is missing; turn that into a bool.
#[cfg(feature = "cuda")]
pub fn cuda_usable(index: usize) -> bool {
    use burn::backend::{Cuda, cuda::CudaDevice};
    use burn::prelude::*;
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ok = std::panic::catch_unwind(|| {
        let device = CudaDevice::new(index);
        Tensor::<Cuda, 1>::ones([1], &device).into_scalar()
    })
    .is_ok();
    std::panic::set_hook(previous);
    ok
}

/// `attndet devices`: print the devices this build can use.
pub fn print_devices(selected: &DeviceArg) -> anyhow::Result<()> {
    println!(
        "cpu: yes (burn Flex backend, {} threads)",
        rayon::current_num_threads()
    );
    #[cfg(feature = "cuda")]
    {
        let mut i = 0;
        while cuda_usable(i) {
            println!("cuda:{i}: yes");
            i += 1;
        }
        if i == 0 {
            println!("cuda: compiled in, but no usable device (driver or libcuda.so missing)");
        }
    }
    #[cfg(not(feature = "cuda"))]
    println!("cuda: no (rebuild with --features cuda)");
    selected.check_usable()?;
    println!("selected: {selected}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse::<DeviceArg>(), Ok(DeviceArg::Cpu));
        assert_eq!("cuda:3".parse::<DeviceArg>(), Ok(DeviceArg::Cuda(3)));
        assert_eq!("cuda".parse::<DeviceArg>(), Ok(DeviceArg::Cuda(0)));
        assert!(
            "gpu"
                .parse::<DeviceArg>()
                .unwrap_err()
                .contains("unknown device `gpu`")
        );
        assert!("cuda:x".parse::<DeviceArg>().is_err());
        assert!("".parse::<DeviceArg>().is_err());
    }
}
