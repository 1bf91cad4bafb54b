//! The `diffmine` command line: thin wrappers over the library for people who do not write code. Each
//! command's options and their defaults (read from the library) are listed by `diffmine CMD --help`.
//! Images may be PNG, JPEG, BMP or DICOM wherever a command reads one.
//!
//! Exit status: 0 done, 2 usage, 3 bad input, 4 unusable model, 5 I/O, 130 cancelled (Ctrl-C), 1 other
//! failures (out of memory, libtorch).
mod cxr8;
mod doersch;
mod files;
mod inspect;
mod mining;
mod options;
mod progress;
#[cfg(feature = "synthetic")]
mod synth;
mod training;
mod translation;
mod typicality;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use diffmine::{Error, Result};

#[derive(Parser, Debug)]
#[command(name = "diffmine", version, about = "Diffusion models as data mining tools: typicality, mining and translation", max_term_width = 100)]
struct Cli {
    /// No progress display; errors only in the log.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// More log detail on stderr: -v info, -vv debug, -vvv trace (RUST_LOG, when set, decides instead).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A model's configuration: blocks, channels, text encoder and noise schedule.
    Info(inspect::InfoArgs),
    /// The CLIP token ids of a text.
    Tokenize(inspect::TokenizeArgs),
    /// VAE encode then decode of an image.
    Roundtrip(inspect::RoundtripArgs),
    /// The one-step clean estimate of an image noised to step t: a quick look at what a model learnt.
    Denoise(inspect::DenoiseArgs),
    /// The typicality map of an image for a prompt (PREFIX.npy, PREFIX.png, optionally PREFIX.dcm).
    Typicality(typicality::TypicalityArgs),
    /// Finetunes a model's UNet on a labelled set.
    Finetune(training::FinetuneArgs),
    /// Trains a model's VAE as an autoencoder (for models built from scratch).
    TrainVae(training::TrainVaeArgs),
    /// A labelled radiograph-like set with planted, boxed elements.
    #[cfg(feature = "synthetic")]
    Synth(synth::SynthArgs),
    /// A labelled radiograph-like set (not in this build: it needs the cargo feature `synthetic`).
    #[cfg(not(feature = "synthetic"))]
    #[command(disable_help_flag = true)]
    Synth {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        ignored: Vec<String>,
    },
    /// Mines every label of a labelled set and writes the visual summary (index.html).
    Mine(mining::MineArgs),
    /// The discriminative mining baseline (Doersch et al.: HOG + colour detectors) on a labelled set,
    /// written as the same report as `mine`.
    Doersch(doersch::DoerschArgs),
    /// A DICOM file's metadata and decoded size.
    DicomInfo(inspect::DicomInfoArgs),
    /// ChestX-ray8 AUC-PR of typicality maps against the boxes, per disease.
    Cxr8Eval(cxr8::Cxr8EvalArgs),
    /// Plug-and-Play translation of an image to each target prompt.
    Translate(translation::TranslateArgs),
    /// Text-to-image DDIM sampling.
    Generate(translation::GenerateArgs),
    /// Co-typical elements: every image translated to every other label, mined together.
    ParallelMine(mining::ParallelMineArgs),
    /// A shell completion script on stdout (e.g. `diffmine completions bash > /etc/bash_completion.d/diffmine`).
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Info(args) => args.run(),
        Command::Tokenize(args) => args.run(),
        Command::Roundtrip(args) => args.run(),
        Command::Denoise(args) => args.run(),
        Command::Typicality(args) => args.run(),
        Command::Finetune(args) => args.run(),
        Command::TrainVae(args) => args.run(),
        #[cfg(feature = "synthetic")]
        Command::Synth(args) => args.run(),
        #[cfg(not(feature = "synthetic"))]
        Command::Synth { .. } => Err(Error::InvalidArgument(
            "this diffmine was built without the synthetic data generator: build it with `cargo build --release --features synthetic`".into(),
        )),
        Command::Mine(args) => args.run(),
        Command::Doersch(args) => args.run(),
        Command::DicomInfo(args) => args.run(),
        Command::Cxr8Eval(args) => args.run(),
        Command::Translate(args) => args.run(),
        Command::Generate(args) => args.run(),
        Command::ParallelMine(args) => args.run(),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "diffmine", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// The exit status of a failure, by what the user can do about it: fix the input (3), the model (4),
/// the files or disk (5). A missing input file is an I/O failure (5), as the library reports it.
fn exit_code(err: &Error) -> u8 {
    match err {
        // Unsupported: a feature of the input (a DICOM transfer syntax, a model block type) that the
        // library does not implement; what to change is the input.
        Error::InvalidArgument(_) | Error::InvalidData(_) | Error::Unsupported(_) | Error::Device(_) => 3,
        Error::InvalidModel(_) | Error::CorruptWeights(_) | Error::MissingTensor { .. } | Error::ShapeMismatch { .. } => 4,
        Error::Io { .. } => 5,
        Error::Cancelled => progress::CANCELLED_EXIT,
        Error::OutOfMemory(_) | Error::Torch(_) => 1,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    progress::init_logging(cli.verbose, cli.quiet);
    progress::set_quiet(cli.quiet);
    progress::install_cancellation();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("diffmine: {err}");
            ExitCode::from(exit_code(&err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn each_class_of_failure_has_its_exit_status() {
        assert_eq!(exit_code(&Error::InvalidData("x".into())), 3);
        assert_eq!(exit_code(&Error::InvalidModel("x".into())), 4);
        assert_eq!(exit_code(&Error::io("/x", "gone")), 5);
        assert_eq!(exit_code(&Error::Cancelled), 130);
    }
}
