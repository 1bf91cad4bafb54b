//! The denoising step shared by Plug-and-Play translation and text-to-image sampling: one UNet call
//! over an optional source-branch row, the unconditional rows (when guided) and the conditional rows,
//! then classifier-free guidance and a DDIM step.
use tch::Tensor;

use super::Ddim;
use crate::error::Result;
use crate::model::unet::Injection;
use crate::model::StableDiffusion;

/// The source branch of one Plug-and-Play step: its latent at the step's timestep (1, C, h, w) and
/// the features it hands to the other rows.
pub struct SourceBranch<'a> {
    pub latent: &'a Tensor,
    pub injection: &'a Injection,
}

pub struct GuidedSampler<'a> {
    model: &'a StableDiffusion,
    ddim: Ddim<'a>,
    guidance: f64,
    /// Text embeddings of every row in UNet order: [source branch] [unconditional × N] conditional × N.
    context: Tensor,
    prompts: i64,
    has_source: bool,
}

impl<'a> GuidedSampler<'a> {
    /// `source_prompt`: the prompt of a Plug-and-Play source branch, None for plain sampling.
    /// Guidance 1 needs no unconditional rows (the guided output is the conditional one), so none run.
    pub fn new(model: &'a StableDiffusion, ddim: Ddim<'a>, prompts: &[&str], null_prompt: &str, guidance: f64, source_prompt: Option<&str>) -> Result<Self> {
        let n = prompts.len();
        let mut texts: Vec<&str> = source_prompt.into_iter().collect();
        if guidance != 1.0 {
            texts.extend(std::iter::repeat_n(null_prompt, n));
        }
        texts.extend_from_slice(prompts);
        let context = model.text_embeddings(&texts)?;
        Ok(GuidedSampler { model, ddim, guidance, context, prompts: n as i64, has_source: source_prompt.is_some() })
    }

    fn guided(&self) -> bool {
        self.guidance != 1.0
    }

    /// The latents (N, C, h, w) at the timestep after `t`, from `x` at `t`.
    pub fn step(&self, t: i64, x: &Tensor, source: Option<SourceBranch>) -> Result<Tensor> {
        let mut rows: Vec<&Tensor> = source.as_ref().map(|s| s.latent).into_iter().collect();
        if self.guided() {
            rows.push(x);
        }
        rows.push(x);
        let input = Tensor::f_cat(&rows, 0)?;
        let timesteps = Tensor::from_slice(&[t]);
        let output = match &source {
            Some(branch) => self.model.predict_noise_injected(&input, &timesteps, &self.context, branch.injection)?,
            None => self.model.predict_noise(&input, &timesteps, &self.context)?,
        };
        let first = i64::from(self.has_source);
        let prediction = if self.guided() {
            let unconditional = output.f_narrow(0, first, self.prompts)?;
            let conditional = output.f_narrow(0, first + self.prompts, self.prompts)?;
            unconditional.f_add(&conditional.f_sub(&unconditional)?.f_mul_scalar(self.guidance)?)?
        } else {
            output.f_narrow(0, first, self.prompts)?
        };
        self.ddim.step(&prediction, t, x)
    }
}
