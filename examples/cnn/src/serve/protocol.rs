//! The Open Inference Protocol (KServe v2) request and response bodies, and the decoding of
//! an infer request into pixels, with errors worded for the caller (they become 400 bodies).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::{CLASSES, IMAGE_PIXELS, IMAGE_SIDE};

/// Most images accepted in one request.
pub const MAX_BATCH: usize = 64;
/// The input tensor's name in metadata.
pub const INPUT_NAME: &str = "input";

/// `POST /v2/models/{name}/infer` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferRequest {
    /// Echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Request parameters; `label` (int) or `labels` (ints, one per image) supply ground truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Map<String, Value>>,
    /// Exactly one FP32 tensor `[N,1,28,28]` or `[N,784]`.
    pub inputs: Vec<InferInput>,
    /// Requested outputs (all outputs are always returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Value>,
}

/// One input tensor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferInput {
    /// Tensor name (any name is accepted).
    pub name: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// Element type; must be `FP32`.
    pub datatype: String,
    /// Row-major data, flat or nested.
    pub data: Value,
    /// Tensor parameters (ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

/// One output tensor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferOutput {
    /// `probabilities` `[N,10]` FP32, `predicted_class` `[N]` INT64, `confidence` `[N]` FP32.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Element type.
    pub datatype: String,
    /// Flat row-major data.
    pub data: Vec<Value>,
}

/// Infer response body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferResponse {
    /// The model's name.
    pub model_name: String,
    /// The version that computed this answer.
    pub model_version: String,
    /// The request's id, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The outputs.
    pub outputs: Vec<InferOutput>,
}

/// The protocol's error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What was wrong.
    pub error: String,
}

/// A decoded request: `n` images of 784 pixels and optional true labels.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedInput {
    /// `n × 784` pixels.
    pub pixels: Vec<f32>,
    /// Number of images.
    pub n: usize,
    /// True labels, one per image, when supplied.
    pub labels: Option<Vec<u32>>,
}

fn flatten_into(value: &Value, out: &mut Vec<f32>, limit: usize) -> Result<(), String> {
    match value {
        Value::Number(n) => {
            let v = n.as_f64().ok_or_else(|| format!("{n} is not a number"))?;
            if out.len() >= limit {
                return Err(format!("more data than the shape's {limit} elements"));
            }
            out.push(v as f32);
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|item| flatten_into(item, out, limit)),
        other => Err(format!("data must hold numbers, found {other}")),
    }
}

/// Checks and decodes an infer request. The error string is the 400 response's message.
pub fn decode(request: &InferRequest) -> Result<DecodedInput, String> {
    let [input] = request.inputs.as_slice() else {
        return Err(format!("expected exactly one input tensor, got {}", request.inputs.len()));
    };
    if input.datatype != "FP32" {
        return Err(format!(
            "input {:?}: datatype must be FP32, got {}",
            input.name, input.datatype
        ));
    }
    let shape_ok = match input.shape.as_slice() {
        [n, c, h, w] => *n >= 1 && *c == 1 && *h == IMAGE_SIDE as i64 && *w == IMAGE_SIDE as i64,
        [n, f] => *n >= 1 && *f == IMAGE_PIXELS as i64,
        _ => false,
    };
    if !shape_ok {
        return Err(format!(
            "input {:?}: shape must be [N,1,28,28] or [N,784] with N >= 1, got {:?}",
            input.name, input.shape
        ));
    }
    let n = usize::try_from(input.shape[0])
        .map_err(|_| format!("bad batch size {}", input.shape[0]))?;
    if n > MAX_BATCH {
        return Err(format!(
            "input {:?}: at most {MAX_BATCH} images per request, got {n}",
            input.name
        ));
    }
    let expected = n * IMAGE_PIXELS;
    let mut pixels = Vec::with_capacity(expected);
    flatten_into(&input.data, &mut pixels, expected)
        .map_err(|e| format!("input {:?}: {e}", input.name))?;
    if pixels.len() != expected {
        return Err(format!(
            "input {:?}: shape {:?} needs {expected} values, got {}",
            input.name,
            input.shape,
            pixels.len()
        ));
    }
    let labels = decode_labels(request.parameters.as_ref(), n)?;
    Ok(DecodedInput { pixels, n, labels })
}

fn decode_labels(
    parameters: Option<&serde_json::Map<String, Value>>,
    n: usize,
) -> Result<Option<Vec<u32>>, String> {
    let Some(parameters) = parameters else { return Ok(None) };
    let label = |v: &Value| {
        v.as_u64()
            .filter(|&l| l < CLASSES as u64)
            .map(|l| l as u32)
            .ok_or_else(|| format!("label {v} is not a class 0..{}", CLASSES - 1))
    };
    let labels = match (parameters.get("labels"), parameters.get("label")) {
        (Some(Value::Array(items)), _) => items.iter().map(label).collect::<Result<Vec<_>, _>>()?,
        (Some(other), _) => return Err(format!("parameter labels must be an array, got {other}")),
        (None, Some(v)) => vec![label(v)?],
        (None, None) => return Ok(None),
    };
    if labels.len() != n {
        return Err(format!("{} labels for {n} images", labels.len()));
    }
    Ok(Some(labels))
}

/// Builds the response outputs from probability rows.
pub fn outputs(probabilities: &[Vec<f32>]) -> Vec<InferOutput> {
    let n = probabilities.len();
    let mut probs = Vec::with_capacity(n * CLASSES);
    let mut classes = Vec::with_capacity(n);
    let mut confidences = Vec::with_capacity(n);
    for row in probabilities {
        probs.extend(row.iter().map(|&p| Value::from(f64::from(p))));
        let (class, p) = crate::model::top1(row);
        classes.push(Value::from(class as i64));
        confidences.push(Value::from(f64::from(p)));
    }
    vec![
        InferOutput {
            name: "probabilities".into(),
            shape: vec![n, CLASSES],
            datatype: "FP32".into(),
            data: probs,
        },
        InferOutput {
            name: "predicted_class".into(),
            shape: vec![n],
            datatype: "INT64".into(),
            data: classes,
        },
        InferOutput {
            name: "confidence".into(),
            shape: vec![n],
            datatype: "FP32".into(),
            data: confidences,
        },
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report
mod tests {
    use super::*;
    use serde_json::json;

    fn request(shape: Value, data: Value, parameters: Value) -> InferRequest {
        serde_json::from_value(json!({
            "inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}],
            "parameters": parameters,
        }))
        .unwrap()
    }

    #[test]
    fn accepts_flat_and_nested_data() {
        let flat =
            decode(&request(json!([1, 784]), json!(vec![0.5; 784]), json!({"label": 3}))).unwrap();
        assert_eq!((flat.n, flat.pixels.len(), flat.labels), (1, 784, Some(vec![3])));
        let nested = json!([[vec![vec![0.25; 28]; 28]], [vec![vec![0.75; 28]; 28]]]);
        let two = decode(&request(json!([2, 1, 28, 28]), nested, json!({}))).unwrap();
        assert_eq!((two.n, two.pixels[0], two.pixels[784], two.labels), (2, 0.25, 0.75, None));
    }

    #[test]
    fn shape_and_data_errors_say_what_is_wrong() {
        let e = decode(&request(json!([1, 3, 28, 28]), json!([]), json!({}))).unwrap_err();
        assert!(e.contains("shape must be [N,1,28,28] or [N,784]"), "{e}");
        let e = decode(&request(json!([1, 784]), json!(vec![0.0; 783]), json!({}))).unwrap_err();
        assert!(e.contains("needs 784 values, got 783"), "{e}");
        let e = decode(&request(json!([1, 784]), json!(vec![0.0; 785]), json!({}))).unwrap_err();
        assert!(e.contains("more data"), "{e}");
        let e = decode(&request(json!([1, 784]), json!(vec![0.0; 784]), json!({"labels": [1, 2]})))
            .unwrap_err();
        assert!(e.contains("2 labels for 1 images"), "{e}");
    }
}
