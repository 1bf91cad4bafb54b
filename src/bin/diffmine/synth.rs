//! `synth`: a generated labelled set with planted, boxed elements (the library's `synthetic` feature).
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use diffmine::synthetic::{write_dataset, write_dicom_copies, SyntheticOptions};
use diffmine::Result;

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// The set's folder: a subfolder per label, the boxes in BBox_List_2017.csv.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Seed of the generator.
    #[arg(long, default_value_t = SyntheticOptions::default().seed)]
    seed: u64,
    /// Images per label.
    #[arg(long, default_value_t = SyntheticOptions::default().images_per_label)]
    per_label: usize,
    /// Side of the square images, in pixels.
    #[arg(long, default_value_t = SyntheticOptions::default().size)]
    size: usize,
    /// held-out: the held-out set of the same options (another seed, patient IDs after the training set's).
    #[arg(long, value_enum, default_value_t = Split::Train)]
    split: Split,
    /// The same images also as DICOM files, DIR/<label>/<name>.dcm.
    #[arg(long, value_name = "DIR")]
    dicom: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum Split {
    Train,
    HeldOut,
}

impl SynthArgs {
    pub fn run(self) -> Result<()> {
        let train = SyntheticOptions { seed: self.seed, images_per_label: self.per_label, size: self.size, ..SyntheticOptions::default() };
        let options = match self.split {
            Split::Train => train,
            Split::HeldOut => train.held_out(),
        };
        let started = Instant::now();
        let summary = write_dataset(&options, &self.out)?;
        println!(
            "wrote {} images of {} px ({} labels: {}) with their boxes to {} in {:.2} s",
            summary.entries.len(),
            summary.size,
            options.labels.len(),
            options.labels.join(", "),
            self.out.display(),
            started.elapsed().as_secs_f64()
        );
        if let Some(dicom) = &self.dicom {
            let count = write_dicom_copies(&options, dicom)?;
            println!("wrote the same {count} images as DICOM to {}", dicom.display());
        }
        Ok(())
    }
}
