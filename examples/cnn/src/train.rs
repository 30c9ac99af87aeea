//! Training and evaluation: generate images, fit the network with AdamW and cross-entropy,
//! measure held-out accuracy and mean confidence.

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use serde::{Deserialize, Serialize};

use crate::data::{DataParams, Dataset, IMAGE_PIXELS, IMAGE_SIDE, SplitMix64};
use crate::error::{CnnError, Result};
use crate::model::{DigitNet, top1};

/// How to train.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The image distribution to train and evaluate on.
    pub data: DataParams,
    /// Training images.
    pub train_samples: usize,
    /// Held-out images (drawn with a different seed).
    pub test_samples: usize,
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per optimiser step.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// Seed of the training images and initial weights; the held-out set uses `seed + 1`.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            data: DataParams::default(),
            train_samples: 6000,
            test_samples: 1000,
            epochs: 4,
            batch_size: 64,
            learning_rate: 0.01,
            seed: 1,
        }
    }
}

/// Held-out figures of a model on a data set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Fraction of images classified correctly.
    pub accuracy: f64,
    /// Mean top-1 probability.
    pub mean_confidence: f64,
}

/// A trained network with its variables (for saving) and held-out figures.
pub struct Trained {
    /// The network.
    pub model: DigitNet,
    /// Its variables; `varmap.save(path)` writes safetensors.
    pub varmap: VarMap,
    /// Figures on the held-out set.
    pub evaluation: Evaluation,
    /// Mean training loss of the last epoch.
    pub final_loss: f32,
}

impl std::fmt::Debug for Trained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // VarMap has no Debug; the variables are the model's, shown through it.
        f.debug_struct("Trained")
            .field("model", &self.model)
            .field("evaluation", &self.evaluation)
            .field("final_loss", &self.final_loss)
            .finish_non_exhaustive()
    }
}

/// Trains a fresh network according to `config`, on the CPU.
pub fn train(config: &TrainConfig) -> Result<Trained> {
    if config.train_samples == 0 || config.batch_size == 0 || config.epochs == 0 {
        return Err(CnnError::InvalidInput(
            "train samples, batch size and epochs must be positive".into(),
        ));
    }
    let device = Device::Cpu;
    let train_set = Dataset::generate(config.train_samples, &config.data, config.seed);
    let test_set =
        Dataset::generate(config.test_samples, &config.data, config.seed.wrapping_add(1));
    let (model, varmap) = DigitNet::fresh(&device, config.seed ^ 0x1417_1A1E)?;
    let params =
        ParamsAdamW { lr: config.learning_rate, weight_decay: 1e-4, ..ParamsAdamW::default() };
    let mut opt =
        AdamW::new(varmap.all_vars(), params).map_err(CnnError::tensor("create optimiser"))?;
    let mut order: Vec<usize> = (0..train_set.len()).collect();
    let mut rng = SplitMix64::new(config.seed ^ 0x5EED);
    let mut final_loss = f32::NAN;
    let mut batch_pixels = Vec::with_capacity(config.batch_size * IMAGE_PIXELS);
    let mut batch_labels = Vec::with_capacity(config.batch_size);
    for epoch in 0..config.epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        // Decay the step size over the epochs: fast early progress, a steady finish.
        opt.set_learning_rate(config.learning_rate * 0.6f64.powi(epoch as i32));
        let (mut loss_sum, mut batches) = (0.0f32, 0usize);
        for chunk in order.chunks(config.batch_size) {
            batch_pixels.clear();
            batch_labels.clear();
            for &i in chunk {
                batch_pixels
                    .extend_from_slice(&train_set.images[i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS]);
                batch_labels.push(train_set.labels[i]);
            }
            let mut step = || -> candle_core::Result<f32> {
                let xs = Tensor::from_slice(
                    &batch_pixels,
                    (chunk.len(), 1, IMAGE_SIDE, IMAGE_SIDE),
                    &device,
                )?;
                let ys = Tensor::from_slice(&batch_labels, chunk.len(), &device)?;
                let loss = candle_nn::loss::cross_entropy(&model.logits(&xs)?, &ys)?;
                opt.backward_step(&loss)?;
                loss.to_dtype(DType::F32)?.to_scalar::<f32>()
            };
            loss_sum += step().map_err(CnnError::tensor("training step"))?;
            batches += 1;
        }
        final_loss = loss_sum / batches.max(1) as f32;
        tracing::debug!(epoch, loss = final_loss, "Epoch finished.");
    }
    let evaluation = evaluate(&model, &test_set)?;
    Ok(Trained { model, varmap, evaluation, final_loss })
}

/// Accuracy and mean confidence of `model` on `set`, in batches of 256.
pub fn evaluate(model: &DigitNet, set: &Dataset) -> Result<Evaluation> {
    let device = Device::Cpu;
    let (mut correct, mut confidence) = (0usize, 0.0f64);
    for (pixels, labels) in set.images.chunks(256 * IMAGE_PIXELS).zip(set.labels.chunks(256)) {
        for (row, label) in model.probabilities(pixels, labels.len(), &device)?.iter().zip(labels) {
            let (class, p) = top1(row);
            correct += usize::from(class == *label as usize);
            confidence += f64::from(p);
        }
    }
    let n = set.len().max(1) as f64;
    Ok(Evaluation { accuracy: correct as f64 / n, mean_confidence: confidence / n })
}
