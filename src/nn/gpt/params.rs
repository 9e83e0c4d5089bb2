//! The GPT's parameters on the host: their names in GPT-2's state-dict layout, their
//! shapes, GPT-2's initialisation, and [`GptWeights`], the values in that order (what
//! checkpoints, the Hugging Face export and `--init` move around).
//!
//! Names and order follow Hugging Face's `GPT2LMHeadModel` state dict: `transformer.wte`,
//! `transformer.wpe`, per block `transformer.h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2,
//! mlp.c_fc, mlp.c_proj}`, then `transformer.ln_f`. The LM head is the token embedding
//! (tied), so it has no tensor of its own. Linear weights are stored `(out, in)` as in
//! `nn.Linear` (the layout halfgrad's matrix products read); GPT-2's `Conv1D` stores
//! `(in, out)`, so the Hugging Face export transposes them ([`super::hf`]).

use super::config::GptConfig;
use crate::checkpoint::Checkpoint;
use crate::nn::init::{normal_vec, SplitMix64};
use crate::{Error, Result};

/// Standard deviation of GPT-2's normal initialisation (`initializer_range`).
pub const INIT_STD: f32 = 0.02;

/// How a parameter starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// N(0, std^2).
    Normal(f32),
    Zeros,
    Ones,
}

/// A parameter's name, shape and initialisation.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// GPT-2 state-dict name, e.g. `transformer.h.0.attn.c_attn.weight`.
    pub name: String,
    /// Row-major shape; Linear weights `(out, in)`.
    pub shape: Vec<usize>,
    pub init: Init,
}

impl ParamSpec {
    fn new(name: String, shape: &[usize], init: Init) -> ParamSpec {
        ParamSpec {
            name,
            shape: shape.to_vec(),
            init,
        }
    }

    /// Elements (the product of the shape).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A Linear (or embedding) weight: 2-D, stored `(out, in)`.
    pub fn is_matrix(&self) -> bool {
        self.shape.len() == 2
    }
}

/// Name of the token embedding `(vocab, n_embd)`, also the LM head's weight.
pub const WTE: &str = "transformer.wte.weight";
/// Name of the position embedding `(block, n_embd)`.
pub const WPE: &str = "transformer.wpe.weight";

/// The prefix of block `layer`'s parameters, `transformer.h.{layer}`.
pub fn block_prefix(layer: usize) -> String {
    format!("transformer.h.{layer}")
}

impl GptConfig {
    /// Every parameter in state-dict order, with GPT-2's initialisation: weights and
    /// embeddings N(0, 0.02^2); the two projections into the residual stream
    /// (`attn.c_proj.weight`, `mlp.c_proj.weight`) N(0, (0.02 / sqrt(2 n_layer))^2);
    /// LayerNorm weights 1; biases 0. Call [`GptConfig::validate`] first.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let (v, t, c) = (self.vocab, self.block, self.n_embd);
        let normal = Init::Normal(INIT_STD);
        let proj = Init::Normal(INIT_STD / (2.0 * self.n_layer.max(1) as f32).sqrt());
        let mut specs = vec![
            ParamSpec::new(WTE.into(), &[v, c], normal),
            ParamSpec::new(WPE.into(), &[t, c], normal),
        ];
        let layer_norm = |specs: &mut Vec<ParamSpec>, p: String| {
            specs.push(ParamSpec::new(format!("{p}.weight"), &[c], Init::Ones));
            specs.push(ParamSpec::new(format!("{p}.bias"), &[c], Init::Zeros));
        };
        let linear = |specs: &mut Vec<ParamSpec>, p: String, inp: usize, out: usize, w| {
            specs.push(ParamSpec::new(format!("{p}.weight"), &[out, inp], w));
            specs.push(ParamSpec::new(format!("{p}.bias"), &[out], Init::Zeros));
        };
        for layer in 0..self.n_layer {
            let h = block_prefix(layer);
            layer_norm(&mut specs, format!("{h}.ln_1"));
            linear(&mut specs, format!("{h}.attn.c_attn"), c, 3 * c, normal);
            linear(&mut specs, format!("{h}.attn.c_proj"), c, c, proj);
            layer_norm(&mut specs, format!("{h}.ln_2"));
            linear(&mut specs, format!("{h}.mlp.c_fc"), c, 4 * c, normal);
            linear(&mut specs, format!("{h}.mlp.c_proj"), 4 * c, c, proj);
        }
        layer_norm(&mut specs, "transformer.ln_f".into());
        specs
    }
}

/// A GPT's parameter values on the host, in [`GptConfig::param_specs`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct GptWeights {
    config: GptConfig,
    specs: Vec<ParamSpec>,
    values: Vec<Vec<f32>>,
}

impl GptWeights {
    /// GPT-2's initialisation ([`GptConfig::param_specs`]) from one SplitMix64 stream
    /// seeded by `seed`, drawn tensor after tensor in state-dict order (row-major within
    /// a tensor; constant tensors draw nothing). The same seed gives the same values.
    pub fn init(config: &GptConfig, seed: u64) -> Result<GptWeights> {
        config.validate()?;
        let mut rng = SplitMix64::new(seed);
        let specs = config.param_specs();
        let values = specs
            .iter()
            .map(|s| match s.init {
                Init::Normal(std) => normal_vec(&mut rng, s.len(), std),
                Init::Zeros => vec![0.0; s.len()],
                Init::Ones => vec![1.0; s.len()],
            })
            .collect();
        Ok(GptWeights {
            config: *config,
            specs,
            values,
        })
    }

    /// Wraps values given in state-dict order; each must hold its tensor's element
    /// count ([`Error::DataLength`] otherwise).
    pub fn from_values(config: &GptConfig, values: Vec<Vec<f32>>) -> Result<GptWeights> {
        config.validate()?;
        let specs = config.param_specs();
        if values.len() != specs.len() {
            return Err(Error::InvalidArgument(format!(
                "GPT {config}: {} parameter tensors given, the model has {}",
                values.len(),
                specs.len()
            )));
        }
        for (s, v) in specs.iter().zip(&values) {
            if v.len() != s.len() {
                return Err(Error::DataLength {
                    shape: s.shape.clone(),
                    expected: s.len(),
                    got: v.len(),
                });
            }
        }
        Ok(GptWeights {
            config: *config,
            specs,
            values,
        })
    }

    /// Reads every parameter of `config` from `ck` by name (f32, exact shapes). Other
    /// tensors (optimizer state ...) are ignored; a missing or mis-shaped one is an
    /// [`Error::Checkpoint`] naming the file and the tensor.
    pub fn from_checkpoint(ck: &Checkpoint, config: &GptConfig) -> Result<GptWeights> {
        config.validate()?;
        let specs = config.param_specs();
        let values = specs
            .iter()
            .map(|s| ck.get_f32(&s.name, &s.shape))
            .collect::<Result<Vec<_>>>()?;
        GptWeights::from_values(config, values)
    }

    /// Appends every parameter to `ck` as an F32 tensor under its state-dict name.
    pub fn write_to(&self, ck: &mut Checkpoint) -> Result<()> {
        for (s, v) in self.iter() {
            ck.push_f32(&s.name, &s.shape, v)?;
        }
        Ok(())
    }

    /// The same model with a context of `block` positions: the first `block` rows of
    /// the position embedding (fine-tuning with a shorter context than the checkpoint's).
    /// A longer context has no position embeddings to start from: an
    /// [`Error::InvalidArgument`] naming both sizes.
    pub fn with_block(mut self, block: usize) -> Result<GptWeights> {
        if block > self.config.block || block == 0 {
            return Err(Error::InvalidArgument(format!(
                "block {block} is not within the checkpoint's 1..={} positions (its position \
                 embedding has {} rows)",
                self.config.block, self.config.block
            )));
        }
        let config = GptConfig {
            block,
            ..self.config
        };
        let wpe = self.specs.iter().position(|s| s.name == WPE).unwrap_or(1);
        self.values[wpe].truncate(block * config.n_embd);
        self.specs = config.param_specs();
        self.config = config;
        Ok(self)
    }

    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// The specs, in state-dict order.
    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// The values, in state-dict order.
    pub fn values(&self) -> &[Vec<f32>] {
        &self.values
    }

    /// Mutable values (lengths must stay: [`GptWeights::from_values`] checked them).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut [f32]> {
        self.values.iter_mut().map(|v| v.as_mut_slice())
    }

    /// `(spec, values)` pairs in state-dict order.
    pub fn iter(&self) -> impl Iterator<Item = (&ParamSpec, &[f32])> {
        self.specs
            .iter()
            .zip(self.values.iter().map(|v| v.as_slice()))
    }

    /// The values of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.iter().find(|(s, _)| s.name == name).map(|(_, v)| v)
    }

    /// Trainable scalars.
    pub fn num_params(&self) -> usize {
        self.values.iter().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_shapes_and_init_follow_gpt2() {
        let c = GptConfig {
            vocab: 11,
            block: 5,
            n_layer: 2,
            n_head: 2,
            n_embd: 8,
        };
        let w = GptWeights::init(&c, 1).unwrap();
        assert_eq!(w.num_params(), c.num_params());
        let names: Vec<&str> = w.specs().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            &names[..4],
            [
                WTE,
                WPE,
                "transformer.h.0.ln_1.weight",
                "transformer.h.0.ln_1.bias"
            ]
        );
        assert_eq!(names.len(), 2 + 12 * 2 + 2);
        assert_eq!(names[names.len() - 1], "transformer.ln_f.bias");
        let spec = |n: &str| w.specs().iter().find(|s| s.name == n).unwrap().clone();
        assert_eq!(spec("transformer.h.1.attn.c_attn.weight").shape, [24, 8]);
        assert_eq!(spec("transformer.h.1.mlp.c_proj.weight").shape, [8, 32]);
        assert_eq!(
            spec("transformer.h.0.mlp.c_proj.weight").init,
            Init::Normal(0.02 / 2.0)
        );
        assert!(w
            .get("transformer.h.0.ln_2.weight")
            .unwrap()
            .iter()
            .all(|&x| x == 1.0));
        assert!(w
            .get("transformer.h.0.mlp.c_fc.bias")
            .unwrap()
            .iter()
            .all(|&x| x == 0.0));
        assert_eq!(w, GptWeights::init(&c, 1).unwrap());
        assert_ne!(w, GptWeights::init(&c, 2).unwrap());
    }

    #[test]
    fn checkpoint_round_trip_and_errors() {
        let c = GptConfig {
            vocab: 7,
            block: 3,
            n_layer: 1,
            n_head: 1,
            n_embd: 4,
        };
        let w = GptWeights::init(&c, 3).unwrap();
        let mut ck = Checkpoint::new();
        w.write_to(&mut ck).unwrap();
        assert_eq!(GptWeights::from_checkpoint(&ck, &c).unwrap(), w);
        let wider = GptConfig { n_embd: 8, ..c };
        assert!(matches!(
            GptWeights::from_checkpoint(&ck, &wider),
            Err(Error::Checkpoint { .. })
        ));
        ck.tensors.retain(|t| t.name != WPE);
        match GptWeights::from_checkpoint(&ck, &c) {
            Err(Error::Checkpoint { message, .. }) => assert!(message.contains(WPE)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            GptWeights::from_values(&c, vec![vec![0.0; 3]]),
            Err(Error::InvalidArgument(_))
        ));
    }
}
