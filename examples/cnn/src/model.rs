//! The network: two 5×5 convolutions with ReLU and 2×2 max-pooling, then one linear layer
//! to ten logits. About 6,000 parameters: small enough to train in seconds on two cores,
//! big enough to tell the seven-segment digits apart under jitter and noise.

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, Module, VarBuilder, VarMap};

use crate::data::{CLASSES, IMAGE_PIXELS, IMAGE_SIDE, SplitMix64};
use crate::error::{CnnError, Result};

/// Channels after the first convolution.
const CONV1_CHANNELS: usize = 8;
/// Channels after the second convolution.
const CONV2_CHANNELS: usize = 16;
/// Features entering the linear layer: 28 →conv5→ 24 →pool→ 12 →conv5→ 8 →pool→ 4.
const FLAT_FEATURES: usize = CONV2_CHANNELS * 4 * 4;

/// The digit classifier. Parameter names in the safetensors file are `conv1.*`, `conv2.*`,
/// `fc.*` (weight and bias each).
#[derive(Debug, Clone)]
pub struct DigitNet {
    conv1: Conv2d,
    conv2: Conv2d,
    fc: Linear,
}

impl DigitNet {
    /// Builds the layers from `vb` (fresh variables when `vb` is backed by a [`VarMap`],
    /// loaded weights when backed by tensors).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig::default();
        let conv1 = candle_nn::conv2d(1, CONV1_CHANNELS, 5, cfg, vb.pp("conv1"))
            .map_err(CnnError::tensor("build conv1"))?;
        let conv2 = candle_nn::conv2d(CONV1_CHANNELS, CONV2_CHANNELS, 5, cfg, vb.pp("conv2"))
            .map_err(CnnError::tensor("build conv2"))?;
        let fc = candle_nn::linear(FLAT_FEATURES, CLASSES, vb.pp("fc"))
            .map_err(CnnError::tensor("build fc"))?;
        Ok(Self { conv1, conv2, fc })
    }

    /// A freshly initialised network whose variables live in the returned map (for training).
    ///
    /// The initial weights are a pure function of `seed` (He-uniform weights, small uniform
    /// biases, drawn in variable-name order), so a training run is reproducible: the same
    /// config and seed give the same model.
    pub fn fresh(device: &Device, seed: u64) -> Result<(Self, VarMap)> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let net = Self::new(vb)?;
        let mut rng = SplitMix64::new(seed);
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| CnnError::InvalidInput("variable map poisoned".into()))?;
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in names {
            let var = &vars[name];
            let dims = var.dims().to_vec();
            let fan_in = fan_in_of_layer(name);
            let bound = if name.ends_with(".bias") {
                1.0 / (fan_in as f32).sqrt()
            } else {
                (6.0 / fan_in as f32).sqrt()
            };
            let values: Vec<f32> =
                (0..var.elem_count()).map(|_| rng.uniform(-bound, bound)).collect();
            Tensor::from_vec(values, dims, device)
                .and_then(|t| var.set(&t))
                .map_err(CnnError::tensor("initialise weights"))?;
        }
        drop(vars);
        Ok((net, varmap))
    }

    /// Loads weights from safetensors bytes.
    pub fn from_safetensors(bytes: Vec<u8>, device: &Device) -> Result<Self> {
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device)
            .map_err(CnnError::tensor("read safetensors"))?;
        Self::new(vb)
    }

    /// Logits `[N, 10]` for images `[N, 1, 28, 28]`.
    pub fn logits(&self, images: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.conv1.forward(images)?.relu()?.max_pool2d(2)?;
        let x = self.conv2.forward(&x)?.relu()?.max_pool2d(2)?;
        self.fc.forward(&x.flatten_from(1)?)
    }

    /// Class probabilities for `n` images given as `n × 784` pixels, one row per image.
    pub fn probabilities(
        &self,
        pixels: &[f32],
        n: usize,
        device: &Device,
    ) -> Result<Vec<Vec<f32>>> {
        if pixels.len() != n * IMAGE_PIXELS {
            return Err(CnnError::InvalidInput(format!(
                "expected {} values for {n} images, got {}",
                n * IMAGE_PIXELS,
                pixels.len()
            )));
        }
        let images = Tensor::from_slice(pixels, (n, 1, IMAGE_SIDE, IMAGE_SIDE), device)
            .map_err(CnnError::tensor("build input tensor"))?;
        self.logits(&images)
            .and_then(|l| candle_nn::ops::softmax(&l, D::Minus1))
            .and_then(|p| p.to_vec2::<f32>())
            .map_err(CnnError::tensor("forward pass"))
    }
}

/// Inputs feeding each unit of the layer that owns the variable `name` (`conv1.bias` → 1×5×5).
fn fan_in_of_layer(name: &str) -> usize {
    match name.split('.').next() {
        Some("conv1") => 5 * 5,
        Some("conv2") => CONV1_CHANNELS * 5 * 5,
        _ => FLAT_FEATURES,
    }
}

/// The predicted class and its probability (top-1) for one probability row.
pub fn top1(probabilities: &[f32]) -> (usize, f32) {
    probabilities
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, p)| if p > best.1 { (i, p) } else { best })
}
