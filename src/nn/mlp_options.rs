//! [`MlpOptions`]: the MLP classifier's architecture as a run chooses it (hidden widths,
//! activation, LayerNorm), apart from the run's optimizer, schedule and scaler settings
//! ([`TrainConfig`](crate::train::TrainConfig)). The input width and the class count come
//! from the data set, so [`MlpOptions::mlp_config`] takes them.

use super::{Activation, MlpConfig};
use crate::{Error, Result};

/// The digits MLP's architecture apart from its data-given ends. [`Default`] is the model
/// `halfgrad train` trains on the digits: 64-128-128-10 with a LayerNorm after each
/// hidden Linear and GELU (tanh approximation), Linear biases on.
///
/// Without the LayerNorm (and the run's input noise) the model memorises the 1,437
/// training digits within a few hundred steps and stays near 91% on the test writers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlpOptions {
    /// Hidden layer widths (the MLP is `features -> hidden... -> classes`); may be empty
    /// (a linear classifier).
    pub hidden: Vec<usize>,
    /// Activation after each hidden Linear.
    pub activation: Activation,
    /// A LayerNorm after each hidden Linear, before the activation.
    pub layer_norm: bool,
}

impl Default for MlpOptions {
    fn default() -> Self {
        MlpOptions {
            hidden: vec![128, 128],
            activation: Activation::Gelu,
            layer_norm: true,
        }
    }
}

impl MlpOptions {
    /// Every hidden width is at least 1 ([`Error::InvalidArgument`] otherwise).
    pub fn validate(&self) -> Result<()> {
        if self.hidden.contains(&0) {
            return Err(Error::InvalidArgument(format!(
                "hidden widths {:?}: every width must be at least 1",
                self.hidden
            )));
        }
        Ok(())
    }

    /// The MLP for `features` inputs and `classes` outputs (with biases).
    pub fn mlp_config(&self, features: usize, classes: usize) -> MlpConfig {
        let mut widths = Vec::with_capacity(self.hidden.len() + 2);
        widths.push(features);
        widths.extend_from_slice(&self.hidden);
        widths.push(classes);
        MlpConfig {
            widths,
            activation: self.activation,
            layer_norm: self.layer_norm,
            bias: true,
        }
    }

    /// The options an [`MlpConfig`] was built from (a checkpoint's model line): its
    /// hidden widths, activation and LayerNorm. [`Error::InvalidArgument`] for a config
    /// these options cannot express: no biases, or fewer than two widths.
    pub fn from_config(config: &MlpConfig) -> Result<MlpOptions> {
        config.validate()?;
        if !config.bias {
            return Err(Error::InvalidArgument(format!(
                "model `{config}` is not a trainer MLP (needs biases)"
            )));
        }
        let last = config.widths.len() - 1;
        Ok(MlpOptions {
            hidden: config.widths[1..last].to_vec(),
            activation: config.activation,
            layer_norm: config.layer_norm,
        })
    }

    /// Checks that `requested` (what a resumed run was asked for) equals these options
    /// (what the checkpoint at `origin` holds). The first difference is an
    /// [`Error::Checkpoint`] naming the setting and both values, e.g. resuming with other
    /// `--hidden` widths. The run's other settings: [`TrainConfig::ensure_same`].
    ///
    /// [`TrainConfig::ensure_same`]: crate::train::TrainConfig::ensure_same
    pub fn ensure_same(&self, requested: &MlpOptions, origin: &str) -> Result<()> {
        let widths = |h: &[usize]| {
            let s: Vec<String> = h.iter().map(|w| w.to_string()).collect();
            if s.is_empty() {
                "none".to_string()
            } else {
                s.join(",")
            }
        };
        let (s, r) = (self, requested);
        let mismatch = |what, saved: String, asked: String| {
            Err(Error::setting_mismatch(origin, what, saved, asked))
        };
        if s.hidden != r.hidden {
            return mismatch("hidden widths", widths(&s.hidden), widths(&r.hidden));
        }
        if s.activation != r.activation {
            return mismatch(
                "activation",
                s.activation.to_string(),
                r.activation.to_string(),
            );
        }
        if s.layer_norm != r.layer_norm {
            return mismatch(
                "layer norm",
                s.layer_norm.to_string(),
                r.layer_norm.to_string(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_digits_model_and_reads_back_from_its_config() {
        let digits = MlpOptions::default().mlp_config(64, 10);
        assert_eq!(
            digits.to_string(),
            "widths=64,128,128,10;activation=gelu;layer_norm=true;bias=true"
        );
        assert_eq!(
            MlpOptions::from_config(&digits).unwrap(),
            MlpOptions::default()
        );
        let linear = MlpOptions {
            hidden: vec![],
            activation: Activation::Relu,
            layer_norm: false,
        };
        let config = linear.mlp_config(3, 2);
        assert_eq!(config.widths, [3, 2]);
        assert_eq!(MlpOptions::from_config(&config).unwrap(), linear);
    }

    #[test]
    fn bad_options_and_configs_are_typed_errors() {
        let zero = MlpOptions {
            hidden: vec![8, 0],
            ..MlpOptions::default()
        };
        assert!(matches!(zero.validate(), Err(Error::InvalidArgument(_))));
        let no_bias = MlpConfig {
            bias: false,
            ..MlpOptions::default().mlp_config(4, 2)
        };
        assert!(matches!(
            MlpOptions::from_config(&no_bias),
            Err(Error::InvalidArgument(m)) if m.contains("needs biases")
        ));
        let one_width = MlpConfig {
            widths: vec![4],
            ..no_bias
        };
        assert!(matches!(
            MlpOptions::from_config(&one_width),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn ensure_same_names_the_first_model_setting_that_differs() {
        let saved = MlpOptions::default();
        assert!(saved.ensure_same(&saved.clone(), "ck").is_ok());
        for (asked, what) in [
            (
                MlpOptions {
                    hidden: vec![],
                    ..saved.clone()
                },
                "hidden widths mismatch: the checkpoint was trained with 128,128, this run asks for none",
            ),
            (
                MlpOptions {
                    activation: Activation::Relu,
                    ..saved.clone()
                },
                "activation mismatch",
            ),
            (
                MlpOptions {
                    layer_norm: false,
                    ..saved.clone()
                },
                "layer norm mismatch",
            ),
        ] {
            match saved.ensure_same(&asked, "ck") {
                Err(Error::Checkpoint { path, message }) => {
                    assert_eq!(path, "ck");
                    assert!(message.contains(what), "{message}");
                }
                other => panic!("expected a checkpoint error, got {other:?}"),
            }
        }
    }
}
