//! The `--device cpu|cuda:N|wgpu[:N]` option of the subcommands that compute with tensors (train, test, infer,
//! demo, classify, devices, benchmark, swap).

use std::str::FromStr;

/// `--device`, flattened into the arguments of each subcommand that computes.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceOpt {
    /// Where tensors live: `cpu` (burn's Flex backend), `cuda:N` (a build with `--features cuda`) or `wgpu[:N]`
    /// (a build with `--features wgpu`; `attndet devices` lists the adapters).
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda:N|wgpu[:N]")]
    pub device: DeviceArg,
}

/// A compute device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceArg {
    /// The CPU, through burn's Flex backend.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
    /// burn's wgpu backend: `None` is wgpu's preferred adapter (a discrete GPU first), `Some(n)` the n-th adapter
    /// that `attndet devices` lists.
    Wgpu(Option<usize>),
}

impl FromStr for DeviceArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let index = |prefix: &str| s.strip_prefix(prefix).map(str::parse::<usize>);
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            "wgpu" => Ok(Self::Wgpu(None)),
            _ => match (index("cuda:"), index("wgpu:")) {
                (Some(Ok(i)), _) => Ok(Self::Cuda(i)),
                (_, Some(Ok(i))) => Ok(Self::Wgpu(Some(i))),
                _ => Err(format!(
                    "unknown device `{s}`: expected `cpu`, `cuda:N` (e.g. cuda:0) or `wgpu[:N]` (N as `attndet \
                     devices` lists the adapters)"
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
            Self::Wgpu(None) => f.write_str("wgpu"),
            Self::Wgpu(Some(i)) => write!(f, "wgpu:{i}"),
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
    /// Check the device, then run `job` on its backend: burn's Flex for `cpu`, CUDA for `cuda:N`, wgpu for
    /// `wgpu[:N]`. The one place where a device name becomes a backend type.
    pub fn run<J: BackendJob>(&self, job: J) -> anyhow::Result<J::Output> {
        self.check_usable()?;
        match self {
            Self::Cpu => job.run::<burn::backend::Flex>(&Default::default()),
            #[cfg(feature = "cuda")]
            Self::Cuda(i) => job.run::<burn::backend::Cuda>(&burn::backend::cuda::CudaDevice::new(*i)),
            #[cfg(not(feature = "cuda"))]
            Self::Cuda(_) => unreachable!("check_usable rejects CUDA without the feature"),
            #[cfg(feature = "wgpu")]
            Self::Wgpu(i) => job.run::<burn::backend::Wgpu>(&wgpu_adapters::device(*i)?),
            #[cfg(not(feature = "wgpu"))]
            Self::Wgpu(_) => unreachable!("check_usable rejects wgpu without the feature"),
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
            #[cfg(not(feature = "wgpu"))]
            Self::Wgpu(_) => Err(crate::errors::bad_input(format!(
                "--device {self}: this attndet was built without wgpu support; rebuild with \
                 `cargo build --release --features wgpu`"
            ))),
            #[cfg(feature = "wgpu")]
            Self::Wgpu(i) => {
                let device = wgpu_adapters::device(*i)?;
                if wgpu_adapters::usable(&device) {
                    Ok(())
                } else {
                    Err(crate::errors::bad_input(format!(
                        "--device {self}: the wgpu adapter cannot run compute shaders (see `attndet devices`)"
                    )))
                }
            }
        }
    }
}

/// The error of `--amp`: mixed precision is not built, on any device, and why.
///
/// burn 0.21 has half-precision element types (`Wgpu<f16>`, `Cuda<f16>`/`<bf16>`) and a differentiable
/// `Tensor::cast`, but no autocast policy and no loss scaler: a half-precision backend keeps the weights and
/// the optimizer state in f16 too (an SGD step of lr x grad below f16's resolution of the weight is lost), and
/// casting around each convolution by hand doubles its memory traffic. burn's wgpu backend compiles WGSL,
/// which has f16 only where the adapter has `shader-f16` and no bf16 at all.
pub fn amp_refused(device: &DeviceArg) -> anyhow::Error {
    let place = match device {
        DeviceArg::Cpu => "burn's CPU backend computes in f32 only; ",
        _ => "",
    };
    crate::errors::bad_input(format!(
        "--amp (device {device}): mixed precision is not available in this attndet: {place}burn 0.21 has no \
         autocast and no loss scaler, and a half-precision backend would keep weights and optimizer state in \
         f16 (small SGD updates vanish). Train in f32 (drop --amp); see the README's GPU section"
    ))
}

/// Probe a CUDA device. burn's CUDA runtime panics on first use when the driver is missing; turn that into a bool.
#[cfg(feature = "cuda")]
pub fn cuda_usable(index: usize) -> bool {
    use burn::backend::{Cuda, cuda::CudaDevice};
    use burn::prelude::*;
    quietly(|| {
        let device = CudaDevice::new(index);
        Tensor::<Cuda, 1>::ones([1], &device).into_scalar()
    })
    .is_some()
}

/// Run `f`, turning a panic into `None` without printing it (burn's GPU runtimes panic when a device is
/// missing).
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn quietly<R>(f: impl FnOnce() -> R) -> Option<R> {
    attndet_backbones::panics::quietly(f).ok()
}

/// The wgpu adapters of the graphics API burn's wgpu backend uses here (Vulkan on Linux), and the burn device
/// of each.
#[cfg(feature = "wgpu")]
pub mod wgpu_adapters {
    use burn::backend::wgpu::WgpuDevice;
    use burn::backend::wgpu::graphics::{AutoGraphicsApi, GraphicsApi};

    /// One adapter, as `attndet devices` reports it.
    #[derive(Debug, Clone, serde::Serialize)]
    pub struct Adapter {
        /// Position in the list: `--device wgpu:N`.
        pub index: usize,
        /// The adapter's name (e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`).
        pub name: String,
        /// Driver name and version.
        pub driver: String,
        /// Graphics API (`Vulkan`, `Metal`, ...).
        pub api: String,
        /// wgpu's device type (`DiscreteGpu`, `IntegratedGpu`, `Cpu`, ...).
        pub kind: String,
        /// A software rasteriser on the CPU (lavapipe, llvmpipe, SwiftShader, WARP): correct, not fast.
        pub software: bool,
        /// Whether the adapter supports f16 in shaders (what `--amp` would need).
        pub shader_f16: bool,
        /// The burn device that selects this adapter.
        #[serde(skip)]
        pub device: WgpuDevice,
    }

    /// Every adapter, in wgpu's enumeration order (the order burn selects from). Empty when no driver is
    /// installed (e.g. no Vulkan ICD: `apt-get install mesa-vulkan-drivers` gives lavapipe).
    pub fn list() -> Vec<Adapter> {
        let backend = AutoGraphicsApi::backend();
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: backend.into(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapters = pollster_block_on(instance.enumerate_adapters(backend.into()));
        let mut seen: std::collections::HashMap<String, usize> = Default::default();
        adapters
            .iter()
            .enumerate()
            .map(|(index, a)| {
                let info = a.get_info();
                let kind = format!("{:?}", info.device_type);
                // burn numbers adapters per type: the k-th discrete GPU is `DiscreteGpu(k)`.
                let nth = seen.entry(kind.clone()).or_default();
                let device = match info.device_type {
                    wgpu::DeviceType::DiscreteGpu => WgpuDevice::DiscreteGpu(*nth),
                    wgpu::DeviceType::IntegratedGpu => WgpuDevice::IntegratedGpu(*nth),
                    wgpu::DeviceType::VirtualGpu => WgpuDevice::VirtualGpu(*nth),
                    wgpu::DeviceType::Cpu => WgpuDevice::Cpu,
                    wgpu::DeviceType::Other => WgpuDevice::DefaultDevice,
                };
                *nth += 1;
                let name_lower = info.name.to_lowercase();
                Adapter {
                    index,
                    software: info.device_type == wgpu::DeviceType::Cpu
                        || ["llvmpipe", "lavapipe", "swiftshader", "warp"]
                            .iter()
                            .any(|s| name_lower.contains(s)),
                    shader_f16: a.features().contains(wgpu::Features::SHADER_F16),
                    name: info.name,
                    driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
                    api: format!("{:?}", info.backend),
                    kind,
                    device,
                }
            })
            .collect()
    }

    /// The burn device of `--device wgpu` (`None`) or `wgpu:N`; a bad-input error naming the adapters when
    /// there is no such adapter.
    pub fn device(index: Option<usize>) -> anyhow::Result<WgpuDevice> {
        let adapters = list();
        if adapters.is_empty() {
            return Err(crate::errors::bad_input(
                "--device wgpu: no wgpu adapter found (no GPU driver; on Debian/Ubuntu `apt-get install \
                 mesa-vulkan-drivers` provides lavapipe, a software Vulkan device)",
            ));
        }
        match index {
            None => Ok(WgpuDevice::DefaultDevice),
            Some(i) => adapters.get(i).map(|a| a.device.clone()).ok_or_else(|| {
                crate::errors::bad_input(format!(
                    "--device wgpu:{i}: there are {} wgpu adapters (wgpu:0 to wgpu:{}); see `attndet devices`",
                    adapters.len(),
                    adapters.len() - 1
                ))
            }),
        }
    }

    /// Whether a small computation runs on `device` (the runtime panics when it cannot create the device).
    pub fn usable(device: &WgpuDevice) -> bool {
        use burn::prelude::*;
        let device = device.clone();
        super::quietly(move || {
            let t = Tensor::<burn::backend::Wgpu, 1>::from_floats([1.0, 2.0], &device);
            (t * 2.0).sum().into_scalar().elem::<f32>()
        }) == Some(6.0)
    }

    /// wgpu's enumeration is an `async fn` that completes at once on native platforms.
    fn pollster_block_on<F: std::future::Future>(f: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::yield_now();
        }
    }
}

/// Arguments of `attndet devices`.
#[derive(clap::Args, Debug, Clone)]
pub struct DevicesArgs {
    /// Print one JSON object (`cpu`, `cuda`, `wgpu` adapters, `selected`) instead of text.
    #[arg(long)]
    pub json: bool,
    /// The device to check.
    #[command(flatten)]
    pub device: DeviceOpt,
}

/// `attndet devices`: print the devices this build can use, then check the selected one.
pub fn print_devices(args: &DevicesArgs, selected: &DeviceArg) -> anyhow::Result<()> {
    let threads = rayon::current_num_threads();
    #[cfg(feature = "cuda")]
    let cuda: Option<Vec<usize>> = Some((0..).take_while(|&i| cuda_usable(i)).collect());
    #[cfg(not(feature = "cuda"))]
    let cuda: Option<Vec<usize>> = None;
    #[cfg(feature = "wgpu")]
    let wgpu: Option<Vec<wgpu_adapters::Adapter>> = Some(wgpu_adapters::list());
    #[cfg(not(feature = "wgpu"))]
    let wgpu: Option<Vec<serde_json::Value>> = None;
    if args.json {
        selected.check_usable()?;
        let v = serde_json::json!({
            "cpu": {"threads": threads},
            "cuda": cuda,
            "wgpu": wgpu,
            "selected": selected.to_string(),
        });
        println!("{v}");
        return Ok(());
    }
    println!("cpu: yes (burn Flex backend, {threads} threads)");
    match &cuda {
        None => println!("cuda: no (rebuild with --features cuda)"),
        Some(devices) if devices.is_empty() => {
            println!("cuda: compiled in, but no usable device (driver or libcuda.so missing)")
        }
        Some(devices) => devices.iter().for_each(|i| println!("cuda:{i}: yes")),
    }
    #[cfg(feature = "wgpu")]
    match wgpu.as_deref() {
        Some([]) | None => println!(
            "wgpu: compiled in, but no adapter found (no GPU driver; `apt-get install mesa-vulkan-drivers` \
             gives lavapipe, a software Vulkan device)"
        ),
        Some(adapters) => {
            for a in adapters {
                println!(
                    "wgpu:{}: {} [{}; {}, {}{}]",
                    a.index,
                    a.name,
                    a.driver,
                    a.api,
                    a.kind,
                    if a.software {
                        "; software: correct, not fast"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = wgpu;
        println!("wgpu: no (rebuild with --features wgpu)");
    }
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
        assert_eq!("wgpu".parse::<DeviceArg>(), Ok(DeviceArg::Wgpu(None)));
        assert_eq!("wgpu:1".parse::<DeviceArg>(), Ok(DeviceArg::Wgpu(Some(1))));
        assert_eq!(DeviceArg::Wgpu(Some(1)).to_string(), "wgpu:1");
        assert_eq!(DeviceArg::Wgpu(None).to_string(), "wgpu");
        assert!(
            "gpu"
                .parse::<DeviceArg>()
                .unwrap_err()
                .contains("unknown device `gpu`")
        );
        assert!("cuda:x".parse::<DeviceArg>().is_err());
        assert!("wgpu:-1".parse::<DeviceArg>().is_err());
        assert!("wgpu:".parse::<DeviceArg>().is_err());
        assert!("".parse::<DeviceArg>().is_err());
    }
}
